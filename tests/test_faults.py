"""Fault injection, one scenario a test, against real servers with real
processes and real kills. Each fault is injected at a known point (a gate inside
process_range, or a lock a later phase needs: faults.RunHold), the run is
recovered (by the driver itself or by `monthend resume`), and
faults.check_invariants judges the result, against a clean run of the same data
wherever the batch was finished. Driver SIGKILL mid-range, pg_terminate_backend
mid-range, cancel, and a server crash mid-range are in test_resume.py.
"""

from __future__ import annotations

import json
import re
import socket
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from conftest import monthend_cli
from faults import (
    DEFAULT,
    NOTHING_POSTED,
    PERIOD,
    Dataset,
    assert_all_or_nothing,
    assert_committed,
    backends_gone,
    batch_rows,
    batch_status,
    check_invariants,
    connect,
    crash_backend,
    finish,
    gate,
    held_workers,
    hold_lock,
    kill_process,
    range_attempts,
    ranges_by_status,
    restart,
    run_hold,
    stage_tables,
    start_cli,
    wait_for,
    wait_for_lock_wait,
    wait_for_status,
    wait_until_held,
    with_options,
)
from ledger_fingerprint import ledger_fingerprint
from monthend import db

# Crashes, kills, stopped servers and injected faults: the full tier.
pytestmark = pytest.mark.full

TXNS = DEFAULT.txns


def private_target(cluster) -> db.Target:
    return db.Target(cluster.dsn(), "--dsn")


def resume(target: db.Target, batch_id: int, *extra: str) -> dict:
    proc = monthend_cli(target, "resume", str(batch_id), "--json", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return assert_committed(target, proc.stdout, TXNS)


def no_client_check(conn: psycopg.Connection) -> None:
    """Backends of a killed client run on until they next write to it."""
    conn.execute(f"ALTER DATABASE {conn.info.dbname} RESET client_connection_check_interval")


def client_check(conn: psycopg.Connection) -> None:
    """Backends of a killed client notice within 100 ms and roll back."""
    conn.execute(f"ALTER DATABASE {conn.info.dbname} "
                 "SET client_connection_check_interval = '100ms'")


# --- 3. a backend killed with SIGKILL: the postmaster restarts every session ---------


@pytest.mark.parametrize("driver", ["recovers", "killed"])
def test_backend_sigkill_restarts_every_session(private_cluster, clean_fingerprint, driver):
    """SIGKILL of one worker's backend mid-range. The postmaster cannot know what
    the dead process left in shared memory, so it ends every session (the other
    workers, the monitor, the driver's own, the test's) and runs crash recovery.
    The driver reconnects and finishes the batch itself; killed as well, `monthend
    resume` finishes it. Either way: the clean run's ledger."""
    target = private_target(private_cluster)
    DEFAULT.generate(target)
    conn = connect(target.conninfo)
    with gate(target.conninfo):
        proc = start_cli(target, *DEFAULT.run_args())
        held = wait_until_held(conn, proc)
        batch_id = held[0]["batch_id"]
        if driver == "killed":
            kill_process(proc)
        crash_backend(private_cluster, held[0]["pid"])
    conn.close()
    log = private_cluster.log_file.read_text()
    assert f"(PID {held[0]['pid']}) was terminated by signal 9" in log
    assert "terminating any other active server processes" in log

    with connect(target.conninfo) as conn:
        # Every session of the time is gone, the other worker's too.
        assert backends_gone(conn, [h["pid"] for h in held])()
        if driver == "recovers":
            code, out, err = finish(proc)
            assert code == 0, out + err
            assert_committed(target, out, TXNS)
        else:
            assert batch_rows(conn, batch_id) == {"status": "ALLOCATED", **NOTHING_POSTED}
            resume(target, batch_id)
        # The two ranges cut short ran again; nothing else did.
        assert range_attempts(conn, batch_id) == {
            n: 2 if n in {h["range_no"] for h in held} else 1
            for n in range_attempts(conn, batch_id)}
        again = monthend_cli(target, "resume", str(batch_id), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["status"] == "COMMITTED"
        check_invariants(conn, clean=clean_fingerprint(DEFAULT))


POISON_RANGE_SQL = """
CREATE FUNCTION public.poison_range() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (SELECT rg.range_no FROM batch.range AS rg WHERE rg.range_id = NEW.range_id) = 2 THEN
        PERFORM pg_sleep(60);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER poison_range BEFORE INSERT ON batch.range_total
    FOR EACH ROW EXECUTE FUNCTION public.poison_range();
"""


def test_range_whose_backend_crashes_every_time_fails_the_batch(private_cluster,
                                                                 clean_fingerprint):
    """A poison range: every attempt at range 2 takes its backend down (here the
    test SIGKILLs it), so no attempt lives to record its own failure. The range
    still gets no more than --max-attempts attempts: the claim that would hand
    it out once more fails the range and the batch instead, and the driver exits
    1 naming the range and how to resume. It is not re-run, crashing the server,
    for ever."""
    target = private_target(private_cluster)
    DEFAULT.generate(target)
    with connect(target.conninfo) as setup:
        setup.execute(POISON_RANGE_SQL)
    # One worker: a crash then cuts short the poisoned range's attempt alone.
    proc = start_cli(target, *DEFAULT.run_args(1, "--max-attempts", "2"))
    crashes = 0
    for attempt in (1, 2, 3):
        with connect(target.conninfo) as conn:
            def poisoned(attempt: int = attempt, conn: psycopg.Connection = conn
                         ) -> dict | bool | None:
                if proc.poll() is not None:
                    return True
                return conn.execute(
                    "SELECT a.pid FROM pg_stat_activity AS a JOIN batch.range AS rg "
                    "ON rg.worker_pid = a.pid WHERE rg.range_no = 2 AND rg.status = 'RUNNING' "
                    "AND rg.attempts = %s AND a.wait_event = 'PgSleep'", (attempt,)).fetchone()

            victim = wait_for(poisoned, f"attempt {attempt} at range 2")
        if victim is True:
            break
        crash_backend(private_cluster, victim["pid"])
        crashes += 1
    if crashes > 2:
        kill_process(proc)
        pytest.fail("range 2 was attempted beyond --max-attempts 2")
    code, out, err = finish(proc)
    assert code == 1, out + err
    result = json.loads(out)
    batch_id = result["batch_id"]
    assert result["status"] == "FAILED"
    assert result["error"].startswith("range 2 (") and "failed after 2 attempts" in (
        result["error"])
    assert f"monthend resume {batch_id}" in err
    with connect(target.conninfo) as conn:
        assert batch_rows(conn, batch_id) == {"status": "FAILED", **NOTHING_POSTED}
        assert ranges_by_status(conn, batch_id)["FAILED"] == [2]
        conn.execute("DROP TRIGGER poison_range ON batch.range_total")
        resume(target, batch_id)
        check_invariants(conn, clean=clean_fingerprint(DEFAULT))


# --- 4. the server stopped with -m immediate during a phase --------------------------


@pytest.mark.parametrize("point", ["preflight", "preflight_ranges", "allocation", "validation",
                                   "commit_attach", "commit_seal", "post_processing"])
def test_server_stop_immediate_during_phase(private_cluster, clean_fingerprint, point):
    """`pg_ctl stop -m immediate` (no shutdown checkpoint, crash recovery at the
    next start) while the driver's backend waits inside a phase on a lock the
    test holds (faults.HOLD_POINTS says which and why): before the commit the
    batch is entirely absent, after it entirely there, never in part. Then
    `monthend resume` finishes it into the clean run's ledger. The server
    crash mid-range is test_resume.py's test_resume_after_server_crash."""
    target = private_target(private_cluster)
    DEFAULT.generate(target)
    conn = connect(target.conninfo)
    try:
        with run_hold(target.conninfo, conn, point) as hold:
            proc = start_cli(target, *DEFAULT.run_args())
            reached = hold.reach(proc)
            batch_id = reached["batch_id"]
            # Pre-flight's ranges are held in whichever worker claimed the held one.
            worker = rf"monthend {re.escape(socket.gethostname())}/w\d+"
            expected_name = {"preflight_ranges": worker,
                             "validation": "monthend stage"}.get(point, "monthend driver")
            assert re.fullmatch(expected_name, reached["application_name"]), reached
            status_before = batch_status(conn, batch_id)
            private_cluster.stop("immediate")
            kill_process(proc)
        conn.close()
        restart(private_cluster)
        conn = connect(target.conninfo)

        is_in = assert_all_or_nothing(conn, batch_id)
        assert is_in == (point == "post_processing")
        expected_status = {"preflight": "STARTED", "preflight_ranges": "PREFLIGHTING",
                           "allocation": "PREFLIGHTING",
                           "validation": "ALLOCATED", "commit_attach": "VALIDATED",
                           "commit_seal": "VALIDATED", "post_processing": "COMMITTED"}[point]
        assert status_before == batch_status(conn, batch_id) == expected_status
        if point in ("preflight", "preflight_ranges", "allocation"):
            # The serial part's ranges, the held ranges' dead letters and
            # claims, or the ranges' places and the je_id block, went with the
            # phase's transaction.
            # (Strays are dead-lettered by the serial part, before any hold.)
            left = conn.execute("""
                SELECT (SELECT count(*) FROM batch.dead_letter
                         WHERE reason_code NOT IN ('DATE_MISSING', 'PERIOD_CLOSED',
                                                   'DATE_OUTSIDE_PERIOD')) AS dead_letters,
                       (SELECT count(*) FROM batch.source_claim) AS claims,
                       (SELECT count(*) FROM batch.range) AS ranges,
                       (SELECT next_je_id FROM gl.je_id_allocator) AS next_je_id
                """).fetchone()
            assert left["next_je_id"] == 1, left
            assert (left["ranges"] == 0) == (point == "preflight"), left
            assert (left["dead_letters"] == 0) == (left["claims"] == 0) == (
                point != "allocation"), left
            assert stage_tables(conn) == []
        if point == "validation":
            # The held header index piece went with its transaction (the
            # line table's pieces, beside it, may have committed), and no
            # check of validate_batch was written.
            assert conn.execute("SELECT count(*) AS n FROM batch.validation_result "
                                "WHERE batch_id = %s AND phase = 'pre-commit'",
                                (batch_id,)).fetchone()["n"] == 0
            assert conn.execute("SELECT finished_at FROM batch.validation_piece "
                                "WHERE batch_id = %s AND stage_table = 'header' "
                                "AND task = 'index'",
                                (batch_id,)).fetchone()["finished_at"] is None
            assert conn.execute("SELECT to_regclass(%s) AS k",
                                (f"batch.stage_journal_entry_header_{batch_id}_pkey",)
                                ).fetchone()["k"] is None
        if point.startswith("commit"):
            # Both staging tables are back where they were, unattached.
            assert stage_tables(conn) == [f"stage_journal_entry_header_{batch_id}",
                                          f"stage_journal_entry_line_{batch_id}"]
            assert conn.execute("SELECT count(*) AS n FROM pg_class "
                                "WHERE relname LIKE 'stage%%' AND relispartition"
                                ).fetchone()["n"] == 0
        check_invariants(conn, finished=False)

        result = resume(target, batch_id)
        assert result["ranges_retried"] == 0
        check_invariants(conn, clean=clean_fingerprint(DEFAULT))
        assert conn.execute("SELECT count(*) AS n FROM batch.kpi WHERE batch_id = %s",
                            (batch_id,)).fetchone()["n"] == 1
    finally:
        conn.close()


# --- 5. a killed client whose backend runs on and commits ----------------------------


@pytest.mark.parametrize("point", ["processing", "validation", "commit_attach"])
def test_orphaned_backend_commits_resume_does_not_repeat(target, conn, clean_fingerprint,
                                                         point):
    """The driver is killed while its backend waits on a lock the test holds. With
    no client_connection_check_interval the backend does not notice: it is an
    orphan that still holds its claim (a range) or the batch row (a phase).
    `monthend resume` starts while the orphan waits, and waits for it; the lock
    is released, the orphan finishes and commits its work, and resume carries on
    from there. Nothing is done twice: every range one attempt, one RANGE_DONE
    record and one set of totals a range, one validation, one seal."""
    DEFAULT.generate(target)
    no_client_check(conn)
    with run_hold(target.conninfo, conn, point) as hold:
        proc = start_cli(target, *DEFAULT.run_args())
        reached = hold.reach(proc)
        batch_id = reached["batch_id"]
        orphans = reached["waiting"]
        kill_process(proc)
        assert not backends_gone(conn, orphans)()

        resumer = start_cli(target, "resume", str(batch_id), "--json")
        if point == "processing":
            # Resume's workers take the ranges nobody holds and leave the
            # orphans' alone; they too are held at the gate, and then wait.
            def resume_waits() -> bool:
                held = {h["pid"] for h in held_workers(conn)}
                return len(held - set(orphans)) == 2

            wait_for(resume_waits, "resume's workers to be held beside the orphans",
                     proc=resumer)
        else:
            # Resume calls the same phase and waits for the orphan: its lock
            # on the staging table (planning the pieces reads its size), or
            # its row lock on the batch.
            phase, application = (("validation_piece", "monthend stage")
                                  if point == "validation"
                                  else ("batch.commit_batch", "monthend driver"))
            waiting = wait_for_lock_wait(conn, f"%{phase}%", resumer,
                                         application_like=application,
                                         exclude=orphans)
            blockers = conn.execute("SELECT pg_blocking_pids(%s) AS pids",
                                    (waiting["pid"],)).fetchone()["pids"]
            assert set(blockers) & set(orphans)
        hold.release()
        code, out, err = finish(resumer)
        assert code == 0, out + err
        assert_committed(target, out, TXNS)
        wait_for(backends_gone(conn, orphans), "the orphans to exit")

    assert set(range_attempts(conn, batch_id).values()) == {1}
    counts = conn.execute("""
        SELECT (SELECT count(*) FROM batch.range_total AS t JOIN batch.range AS rg
                    USING (range_id) WHERE rg.batch_id = %(b)s) AS totals,
               (SELECT count(DISTINCT (t.range_id, t.currency)) FROM batch.range_total AS t
                  JOIN batch.range AS rg USING (range_id) WHERE rg.batch_id = %(b)s)
                   AS distinct_totals,
               (SELECT count(*) FROM batch.event WHERE batch_id = %(b)s
                   AND kind = 'VALIDATED') AS validations,
               (SELECT count(*) FROM batch.event WHERE batch_id = %(b)s
                   AND kind = 'COMMITTED') AS commits
        """, {"b": batch_id}).fetchone()
    assert counts["totals"] == counts["distinct_totals"]
    assert (counts["validations"], counts["commits"]) == (1, 1)
    if point == "processing":
        # The orphans, not resume, did the ranges they had claimed.
        done_by = {r["range_no"]: r["worker_pid"] for r in conn.execute(
            "SELECT range_no, worker_pid FROM batch.range WHERE batch_id = %s", (batch_id,))}
        assert {h["range_no"]: done_by[h["range_no"]] for h in reached["held"]} == {
            h["range_no"]: h["pid"] for h in reached["held"]}
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


# --- 6. statement_timeout and lock_timeout inside a range ----------------------------


def test_statement_timeout_in_a_range_is_retried(target, conn, clean_fingerprint):
    """The runner's sessions carry statement_timeout (as PGOPTIONS or ALTER ROLE
    ... SET would give them) and range 2 is held longer than that: its attempt is
    cancelled (57014), recorded as failed, and retried once the hold is gone."""
    DEFAULT.generate(target)
    runner = with_options(target, role="monthend_runner", statement_timeout="2s")
    with gate(target.conninfo, "= 2") as the_gate:
        proc = start_cli(runner, *DEFAULT.run_args(2, "--max-attempts", "3"))

        def range_2_failed() -> dict | None:
            return conn.execute("SELECT batch_id, attempts, status, last_error "
                                "FROM batch.range WHERE range_no = 2 "
                                "AND last_error IS NOT NULL").fetchone()

        failed = wait_for(range_2_failed, "range 2's attempt to time out", proc=proc)
        assert (failed["attempts"], failed["status"]) == (1, "PENDING")
        assert "statement timeout" in failed["last_error"]
        the_gate.open()
        code, out, err = finish(proc)
    assert code == 0, out + err
    result = assert_committed(target, out, TXNS)
    assert result["ranges_retried"] == 1
    batch_id = failed["batch_id"]
    assert range_attempts(conn, batch_id)[2] == 2
    attempts = conn.execute("SELECT status, actual FROM batch.validation_result "
                            "WHERE batch_id = %s AND check_name = 'range_attempt'",
                            (batch_id,)).fetchall()
    assert len(attempts) == 1 and "statement timeout" in attempts[0]["actual"]
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


def test_lock_timeout_fails_the_batch_then_resume_finishes(target, conn, clean_fingerprint):
    """The runner's sessions carry lock_timeout, and another session holds SHARE
    on batch.range_total (a DBA's maintenance, a report wanting a stable view):
    each range writes its totals there, so every attempt waits, times out (55P03)
    and is retried until a range has used its attempts; the batch fails, the
    driver exits 1 naming the range and the cause, and nothing is in the ledger.
    Once the lock is gone `monthend resume` finishes the batch."""
    DEFAULT.generate(target)
    runner = with_options(target, role="monthend_runner", lock_timeout="300ms")
    with hold_lock(target.conninfo, "LOCK TABLE batch.range_total IN SHARE MODE"):
        proc = monthend_cli(runner, *DEFAULT.run_args(2, "--max-attempts", "2"))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)
        assert result["status"] == "FAILED"
        assert "failed after 2 attempts: canceling statement due to lock timeout" in (
            result["error"])
        assert f"monthend resume {result['batch_id']}" in proc.stderr
        batch_id = result["batch_id"]
        assert batch_rows(conn, batch_id) == {"status": "FAILED", **NOTHING_POSTED}
        assert ranges_by_status(conn, batch_id).get("DONE") is None
        check_invariants(conn, finished=False)
    resumed = monthend_cli(runner, "resume", str(batch_id), "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_committed(target, resumed.stdout, TXNS)
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


def test_lock_timeout_in_a_phase_exits_1_naming_the_batch(target, conn, clean_fingerprint):
    """A phase, not a range, times out: a DBA holds ACCESS EXCLUSIVE on
    gl.posting_rule (a rule change under way), which pre-flight reads. The phase
    rolls back, the driver exits 1 (the run failed, not the usage) saying which
    batch, where it stands and how to finish it; resume does, once the lock is
    gone."""
    DEFAULT.generate(target)
    runner = with_options(target, role="monthend_runner", lock_timeout="300ms")
    with hold_lock(target.conninfo, "LOCK TABLE gl.posting_rule IN ACCESS EXCLUSIVE MODE"):
        proc = monthend_cli(runner, *DEFAULT.run_args())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    batch_id = json.loads(proc.stdout)["batch_id"]
    assert (f"batch {batch_id}: preflight stopped: canceling statement due to lock timeout"
            in proc.stderr)
    assert f"The batch is STARTED; finish it with `monthend resume {batch_id}`" in proc.stderr
    assert batch_rows(conn, batch_id) == {"status": "STARTED", **NOTHING_POSTED}
    resumed = monthend_cli(runner, "resume", str(batch_id), "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


# --- 7. two drivers and a joiner on one batch, one of them killed --------------------


@pytest.mark.parametrize("victim", ["run", "resume", "work"])
def test_two_drivers_and_a_joiner_one_killed(target, conn, clean_fingerprint, victim):
    """`monthend run`, a second driver (`monthend resume` of the same batch) and a
    joiner (`monthend work`) share one batch; each has workers held mid-range when
    one process is SIGKILLed. Its backends notice and roll back; the others take
    its ranges again, the surviving drivers both reach the end (one of them
    validates and commits, the other finds it done), the joiner exits 0."""
    DEFAULT.generate(target)
    client_check(conn)
    procs: dict[str, object] = {}
    pids: dict[str, set[int]] = {}

    def start_and_hold(name: str, *args: str, workers: int, total: int) -> None:
        before = {h["pid"] for h in held_workers(conn)}
        procs[name] = start_cli(target, *args)
        wait_for(lambda: len(held_workers(conn)) >= total,
                 f"{name}'s workers to be held", proc=procs[name])
        pids[name] = {h["pid"] for h in held_workers(conn)} - before
        assert len(pids[name]) == workers

    with gate(target.conninfo) as the_gate:
        start_and_hold("run", *DEFAULT.run_args(2), workers=2, total=2)
        batch_id = held_workers(conn)[0]["batch_id"]
        start_and_hold("resume", "resume", str(batch_id), "--workers", "2", "--json",
                       workers=2, total=4)
        start_and_hold("work", "work", str(batch_id), "--workers", "1", "--json",
                       workers=1, total=5)
        victim_ranges = {h["range_no"] for h in held_workers(conn) if h["pid"] in pids[victim]}
        kill_process(procs.pop(victim))
        wait_for(backends_gone(conn, list(pids[victim])), f"{victim}'s backends to exit")
        the_gate.open()
        outcomes = {name: finish(proc) for name, proc in procs.items()}

    for name, (code, out, err) in outcomes.items():
        assert code == 0, (name, out, err)
        document = json.loads(out)
        if name == "work":
            assert document["errors"] == [] and document["ranges_processed"] >= 1
        else:
            assert_committed(target, out, TXNS)
    assert range_attempts(conn, batch_id) == {
        n: 2 if n in victim_ranges else 1 for n in range_attempts(conn, batch_id)}
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


# --- 7b. cancel while pre-flight's ranges are under way ---------------------------


def test_cancel_during_preflight_ranges_releases_every_claim(target, conn, clean_fingerprint):
    """`monthend cancel` while the workers are inside pre-flight's ranges, their
    rows classified and their claims about to be written: cancel waits for the
    ranges under way, then releases their claims with the rest. No claim
    outlives the cancelled batch, and the next run posts every row."""
    DEFAULT.generate(target)
    claims = f"batch.source_claim_{PERIOD.replace('-', '_')}"
    with hold_lock(target.conninfo, f"LOCK TABLE {claims} IN SHARE MODE") as holder:
        proc = start_cli(target, *DEFAULT.run_args())
        waiting = wait_for_lock_wait(conn, "%batch.process_range%", proc)
        batch_id = wait_for_status(conn, None, {"PREFLIGHTING"}, proc)["batch_id"]
        canceller = start_cli(target, "cancel", str(batch_id), "--json")
        # Cancel waits for the range's hold on the batch (KEY SHARE).
        wait_for_lock_wait(conn, "%batch.cancel_batch%", canceller,
                           exclude=[waiting["pid"]])
        holder.release()
        code, out, err = finish(canceller)
        assert code == 0, out + err
    finish(proc)
    assert batch_status(conn, batch_id) == "CANCELLED"
    assert conn.execute("SELECT count(*) AS n FROM batch.source_claim WHERE batch_id = %s",
                        (batch_id,)).fetchone()["n"] == 0
    proc = monthend_cli(target, *DEFAULT.run_args())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The cancelled batch used a batch id, so only the ids differ.
    check_invariants(conn, clean=clean_fingerprint(DEFAULT, with_ids=False), with_ids=False)


# --- 8. two runs of one period at once; a re-run of a committed period ---------------


def test_two_runs_of_a_period_then_a_rerun_posts_nothing(target, conn, clean_fingerprint):
    """Two `monthend run` of the same period started together: one gets the
    period, the other exits 2 naming that batch and how to resume it. After the
    commit, a third run of the period posts nothing and changes no ledger row."""
    DEFAULT.generate(target)
    with gate(target.conninfo) as the_gate:
        first, second = (start_cli(target, *DEFAULT.run_args()) for _ in range(2))

        def one_exited() -> bool:
            return first.poll() is not None or second.poll() is not None

        wait_for(one_exited, "one of the two runs to be refused")
        loser, winner = (first, second) if first.poll() is not None else (second, first)
        code, out, err = finish(loser)
        running = wait_for_status(conn, None, {"ALLOCATED"}, proc=winner)
        assert code == 2, out + err
        batch_id = running["batch_id"]
        refusal = (f"period {PERIOD} already has an unfinished batch {batch_id} "
                   f"(status ")
        assert refusal in err and f"monthend resume {batch_id}" in err
        assert json.loads(out) == {"status": "ERROR", "exit_code": 2,
                                   "error": json.loads(out)["error"]}
        assert refusal in json.loads(out)["error"]
        the_gate.open()
        code, out, err = finish(winner)
    assert code == 0, out + err
    assert_committed(target, out, TXNS)
    # The refused start drew a batch id, so only the ids can differ.
    clean = clean_fingerprint(DEFAULT, with_ids=False)
    check_invariants(conn, clean=clean, with_ids=False)
    before = ledger_fingerprint(conn, PERIOD)

    again = monthend_cli(target, *DEFAULT.run_args())
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["status"] == "COMMITTED"
    assert (rerun["posted_rows"], rerun["journal_entries"], rerun["ranges"],
            rerun["je_numbers"]) == (0, 0, 0, None)
    # Only the rows dead-lettered before are judged again (and dead-lettered again).
    assert rerun["source_rows"] == rerun["dead_letter_rows"]
    after = ledger_fingerprint(conn, PERIOD)
    for key in ("headers", "lines", "headers_md5", "lines_md5", "header_ids_md5",
                "line_ids_md5", "first_je_number", "last_je_number", "period",
                "debit", "credit", "functional_debit", "functional_credit"):
        assert after[key] == before[key], key
    check_invariants(conn)


# --- 9. bad input at volume ----------------------------------------------------------


GENERATOR_REASONS = {"AMOUNT_NULL", "AMOUNT_ZERO", "AMOUNT_NEGATIVE", "CURRENCY_UNKNOWN",
                     "TXN_TYPE_UNKNOWN", "DATE_OUTSIDE_PERIOD", "AMOUNT_PRECISION",
                     "LINE_OF_BUSINESS_UNKNOWN", "POLICY_MISSING"}
BAD_VOLUME = Dataset(txns=4000, bad_rows="0.05", seed=11, range_size=400)
# Rows an upstream system might send beside the generated ones:
# (table, id, date, currency, amount, the reason pre-flight must give; None: posted).
CRAFTED = [
    ("premium", 990001, "2024-12-15", "USD", "120.00", "PERIOD_CLOSED"),
    ("premium", 990002, "1900-01-31", "USD", "120.00", "DATE_OUTSIDE_PERIOD"),
    ("claims", 990003, "2025-02-03", "USD", "120.00", None),  # the next period's: not ours
    ("claims", 990004, None, "USD", "120.00", "DATE_MISSING"),
    ("premium", 990005, f"{PERIOD}-10", "USD", "10.001", "AMOUNT_PRECISION"),
    ("premium", 990006, f"{PERIOD}-10", "JPY", "1500.5", "AMOUNT_PRECISION"),
    ("claims", 990007, f"{PERIOD}-10", "BHD", "12.3456", "AMOUNT_PRECISION"),
    ("claims", 990008, f"{PERIOD}-10", "BHD", "12.345", None),
    ("premium", 990009, f"{PERIOD}-10", "JPY", "1500", None),
]


def insert_rows(conn: psycopg.Connection, table: str, rows: list[tuple]) -> None:
    id_col, date_col, txn_type = (("txn_id", "payment_date", "RENEWAL") if table == "premium"
                                  else ("claim_id", "claim_date", "LOSS_PAYMENT"))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO subledger.{table}_transaction ({id_col}, policy_id, {date_col}, "
            "txn_type, line_of_business, amount, currency) "
            f"VALUES (%s, 7, %s, '{txn_type}', 'AUTO', %s, %s)",
            [(i, d, Decimal(a), c) for i, d, c, a in rows])


def test_bad_rows_at_volume_all_dead_lettered_none_lost(target, conn):
    """5% bad rows of every kind the generator makes, rows dated outside the
    period, amounts with too many decimals for their currency, and second loads
    of ids already there (refused by the primary key, before and after the run,
    with nothing lost): every bad row ends in batch.dead_letter with its reason
    and a detail, every good row is posted, and posted + dead-lettered = source."""
    generated = BAD_VOLUME.generate(target)
    assert generated["bad_rows"] >= 0.04 * BAD_VOLUME.txns
    for period in ("2024-12", "2025-02"):
        conn.execute("CALL gl.open_period(%s)", (period,))
    conn.execute("CALL gl.close_period('2024-12')")
    for table in ("premium", "claims"):
        insert_rows(conn, table, [(i, d, c, a) for t, i, d, c, a, _ in CRAFTED if t == table])
    source_before = conn.execute("SELECT count(*) AS n, sum(amount) AS amount "
                                 "FROM subledger.source_transaction").fetchone()

    # A second load of ids already loaded: refused whole, naming the key.
    with pytest.raises(errors.UniqueViolation) as refused:
        insert_rows(conn, "premium", [(5, f"{PERIOD}-02", "USD", "99.00")])
    assert refused.value.diag.constraint_name == "premium_transaction_pkey"
    assert "Key (txn_id)=(5) already exists" in refused.value.diag.message_detail
    # One load carrying an id twice: all or nothing, so nothing.
    with pytest.raises(errors.UniqueViolation), conn.transaction():
        insert_rows(conn, "claims", [(990100, f"{PERIOD}-02", "USD", "1.00"),
                                     (990100, f"{PERIOD}-03", "USD", "2.00")])
    assert conn.execute("SELECT count(*) AS n, sum(amount) AS amount "
                        "FROM subledger.source_transaction").fetchone() == source_before

    proc = monthend_cli(target, *BAD_VOLUME.run_args())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"

    reasons = {r["reason_code"]: r["n"] for r in conn.execute(
        "SELECT reason_code, count(*) AS n FROM batch.dead_letter GROUP BY 1")}
    assert reasons.keys() >= GENERATOR_REASONS
    assert sum(reasons.values()) == result["dead_letter_rows"] == (
        generated["bad_rows"] + sum(1 for *_, reason in CRAFTED if reason))
    crafted = {r["source_id"]: r["reason_code"] for r in conn.execute(
        "SELECT source_id, reason_code FROM batch.dead_letter WHERE source_id >= 990000")}
    assert crafted == {i: reason for _, i, *_, reason in CRAFTED if reason}
    posted = {r["source_id"] for r in conn.execute(
        "SELECT DISTINCT source_id FROM gl.journal_entry_header WHERE source_id >= 990000")}
    assert posted == {990008, 990009}
    assert conn.execute("SELECT count(*) AS n FROM batch.dead_letter "
                        "WHERE coalesce(detail, '') = ''").fetchone()["n"] == 0
    counts = check_invariants(conn)
    # The next period's row is not this run's: neither posted nor dead-lettered.
    assert counts["source_rows"] == source_before["n"] - 1
    assert counts["posted_rows"] == result["posted_rows"]

    # Upstream sends a posted row again, with another amount: refused, the
    # ledger keeps what it posted.
    posted_row = conn.execute("SELECT source_id FROM gl.journal_entry_header "
                              "WHERE source_type = 'PREMIUM' LIMIT 1").fetchone()["source_id"]
    with pytest.raises(errors.UniqueViolation):
        insert_rows(conn, "premium", [(posted_row, f"{PERIOD}-02", "USD", "1.00")])
    check_invariants(conn)


def test_posting_rule_without_balancing_line_refused_at_preflight(target, conn,
                                                                  clean_fingerprint):
    """A template without a balancing line is refused by the schema when it is
    written; one that gets in anyway (the check trigger disabled by a superuser)
    is refused at pre-flight, naming the rule, before anything is claimed,
    dead-lettered or posted. Fixed, `monthend resume` posts the clean run."""
    DEFAULT.generate(target)
    unbalance = ("UPDATE gl.posting_rule SET ratio = 0.1 WHERE source_type = 'PREMIUM' "
                 "AND txn_type = 'RENEWAL' AND je_seq = 2 AND ratio IS NULL "
                 "RETURNING line_no")
    with pytest.raises(errors.CheckViolation) as refused:
        conn.execute(unbalance)
    assert ("posting rules of template PREMIUM/RENEWAL/2 have 0 balancing line(s)"
            in refused.value.diag.message_primary)

    conn.execute("ALTER TABLE gl.posting_rule DISABLE TRIGGER posting_rule_check_template")
    line_no = conn.execute(unbalance).fetchone()["line_no"]
    proc = monthend_cli(target, *DEFAULT.run_args())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    batch_id = result["batch_id"]
    assert result["status"] == "FAILED"
    assert "pre-flight refused the batch: posting rules: PREMIUM/RENEWAL/2 has 0 balancing" \
        in result["error"]
    assert "PREMIUM/RENEWAL/2" in proc.stderr and f"monthend resume {batch_id}" in proc.stderr
    nothing = conn.execute("""
        SELECT (SELECT count(*) FROM batch.source_claim) AS claims,
               (SELECT count(*) FROM batch.dead_letter) AS dead_letters,
               (SELECT count(*) FROM batch.range) AS ranges,
               (SELECT count(*) FROM subledger.stray_transaction) > 0 AS strays_kept
        """).fetchone()
    assert nothing == {"claims": 0, "dead_letters": 0, "ranges": 0, "strays_kept": True}
    assert batch_rows(conn, batch_id) == {"status": "FAILED", **NOTHING_POSTED}
    check = conn.execute("SELECT status, actual FROM batch.validation_result "
                         "WHERE batch_id = %s AND check_name = 'posting_rules_balance'",
                         (batch_id,)).fetchone()
    assert check["status"] == "FAIL" and "PREMIUM/RENEWAL/2" in check["actual"]

    conn.execute("UPDATE gl.posting_rule SET ratio = NULL WHERE source_type = 'PREMIUM' "
                 "AND txn_type = 'RENEWAL' AND je_seq = 2 AND line_no = %s", (line_no,))
    conn.execute("ALTER TABLE gl.posting_rule ENABLE TRIGGER posting_rule_check_template")
    resume(target, batch_id)
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))
