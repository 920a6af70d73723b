"""Crash and resume with real processes and real connections: the driver killed
with SIGKILL mid-run, a worker's backend terminated mid-range, an interrupted
batch cancelled, and the server itself crashing under a run. Each interrupted
run must end in exactly the ledger a clean run of the same data produces.

Ranges are held mid-processing by a gate, not by timing (faults.Gate): at the
moment of the crash range 1 is DONE, both workers sit inside process_range with
their output written but uncommitted, and every other range is PENDING. Every
test ends with faults.check_invariants against a clean run of the same data.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli, preflight_and_allocate
from faults import (
    DEFAULT,
    NOTHING_POSTED,
    PERIOD,
    assert_committed,
    backends_gone,
    batch_rows,
    check_invariants,
    gate,
    kill_process,
    ranges_by_status,
    restart,
    stage_tables,
    start_cli,
    wait_for,
    wait_until_held,
)
from monthend import db

TXNS = DEFAULT.txns
GENERATE_ARGS = DEFAULT.generate_args()
RUN_ARGS = DEFAULT.run_args()


# --- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("orphans", ["die", "finish"])
@pytest.mark.full
def test_resume_after_driver_killed(target, conn, clean_fingerprint, orphans):
    """SIGKILL of the driver mid-run, then `monthend resume`: the clean run's ledger.

    A killed client leaves its backends running. With client_connection_check_interval
    they notice and die, their transactions roll back, and resume re-claims their
    RUNNING ranges from dead backends. Without it they finish their ranges on their
    own once the gate opens, while resume waits for them.
    """
    monthend_cli(target, *GENERATE_ARGS, check=True)
    if orphans == "die":
        conn.execute(f"ALTER DATABASE {conn.info.dbname} "
                     "SET client_connection_check_interval = '100ms'")
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *RUN_ARGS)
        held = wait_until_held(conn, proc)
        batch_id = held[0]["batch_id"]
        kill_process(proc)

        before = ranges_by_status(conn, batch_id)
        assert before["DONE"] == [1]
        assert before["RUNNING"] == [h["range_no"] for h in held]
        assert before.get("PENDING"), "the kill must leave ranges not yet started"
        assert batch_rows(conn, batch_id) == {"status": "ALLOCATED", **NOTHING_POSTED}
        if orphans == "die":
            wait_for(backends_gone(conn, [h["pid"] for h in held]),
                     "the killed driver's backends to notice and exit")
            assert ranges_by_status(conn, batch_id) == before
        the_gate.open()

        proc = monthend_cli(target, "resume", str(batch_id), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert_committed(target, proc.stdout, TXNS)

    attempts = {r["range_no"]: r["attempts"] for r in conn.execute(
        "SELECT range_no, attempts FROM batch.range WHERE batch_id = %s", (batch_id,))}
    held_ranges = {h["range_no"] for h in held}
    # Only what was missing ran again: a range's second attempt only where the
    # killed attempt rolled back.
    assert attempts == {n: 2 if orphans == "die" and n in held_ranges else 1
                        for n in attempts}
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


@pytest.mark.full
def test_backend_terminated_mid_range_is_retried(target, conn, clean_fingerprint):
    """pg_terminate_backend of a worker mid-range: the range's attempt is recorded
    as failed, it is retried, and the run commits the clean run's ledger."""
    monthend_cli(target, *GENERATE_ARGS, check=True)
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *RUN_ARGS)
        victim = wait_until_held(conn, proc)[0]
        conn.execute("SELECT pg_terminate_backend(%s)", (victim["pid"],))

        def failure_recorded() -> dict | None:
            return conn.execute(
                "SELECT status, attempts, last_error FROM batch.range "
                "WHERE range_id = %s AND last_error IS NOT NULL",
                (victim["range_id"],)).fetchone()

        failed = wait_for(failure_recorded, "the driver to record the failed attempt",
                          proc=proc)
        assert failed["attempts"] == 1
        assert failed["status"] == "PENDING"
        assert "terminat" in failed["last_error"]
        the_gate.open()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    result = assert_committed(target, out, TXNS)
    assert result["ranges_retried"] == 1

    retried = conn.execute("SELECT attempts, status, worker_pid <> %s AS other_backend "
                           "FROM batch.range WHERE range_id = %s",
                           (victim["pid"], victim["range_id"])).fetchone()
    assert retried == {"attempts": 2, "status": "DONE", "other_backend": True}
    checks = conn.execute("SELECT status FROM batch.validation_result "
                          "WHERE range_id = %s AND check_name = 'range_attempt'",
                          (victim["range_id"],)).fetchall()
    assert checks == [{"status": "FAIL"}]
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


@pytest.mark.full
def test_cancel_interrupted_batch_leaves_nothing(target, conn, clean_fingerprint):
    """`monthend cancel` of a batch whose driver was killed: no staging, nothing in
    gl, claims and dead letters released; the next run posts everything from 1."""
    monthend_cli(target, *GENERATE_ARGS, check=True)
    conn.execute(f"ALTER DATABASE {conn.info.dbname} "
                 "SET client_connection_check_interval = '100ms'")
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *RUN_ARGS)
        held = wait_until_held(conn, proc)
        batch_id = held[0]["batch_id"]
        kill_process(proc)
        wait_for(backends_gone(conn, [h["pid"] for h in held]),
                 "the killed driver's backends to exit")
        assert len(stage_tables(conn)) == 2
        assert conn.execute("SELECT count(*) AS n FROM batch.source_claim WHERE batch_id = %s",
                            (batch_id,)).fetchone()["n"] > 0

        proc = monthend_cli(target, "cancel", str(batch_id), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout) == {"batch_id": batch_id, "status": "CANCELLED"}

        assert stage_tables(conn) == []
        assert batch_rows(conn, batch_id) == {"status": "CANCELLED", **NOTHING_POSTED}
        leftovers = conn.execute("""
            SELECT (SELECT count(*) FROM gl.journal_entry_header) AS headers,
                   (SELECT count(*) FROM gl.journal_entry_line) AS lines,
                   (SELECT count(*) FROM batch.source_claim) AS claims,
                   (SELECT count(*) FROM batch.dead_letter WHERE batch_id = %s) AS dead_letters,
                   (SELECT count(*) FROM batch.range WHERE batch_id = %s
                     AND status NOT IN ('DONE', 'FAILED')) AS open_ranges
            """, (batch_id, batch_id)).fetchone()
        assert leftovers == {"headers": 0, "lines": 0, "claims": 0, "dead_letters": 0,
                             "open_ranges": 0}
        again = monthend_cli(target, "cancel", str(batch_id))
        assert again.returncode == 2, again.stderr
        the_gate.remove()

    proc = monthend_cli(target, *RUN_ARGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = assert_committed(target, proc.stdout, TXNS)
    assert result["batch_id"] == batch_id + 1
    assert result["ranges_retried"] == 0
    assert result["je_numbers"] == [1, result["journal_entries"]]
    # The cancelled batch used a batch id and a je_id block, so only the ids differ.
    check_invariants(conn, clean=clean_fingerprint(DEFAULT, with_ids=False), with_ids=False)


@pytest.mark.full
def test_resume_after_server_crash(private_cluster, clean_fingerprint):
    """The server stops with -m immediate under a run (crash recovery on restart):
    the ledger holds nothing of the batch, the DONE ranges' staged output survived,
    and `monthend resume` finishes it into the clean run's ledger."""
    target = db.Target(private_cluster.dsn(), "--dsn")
    monthend_cli(target, *GENERATE_ARGS, check=True)
    conn = psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row)
    try:
        with gate(target.conninfo):
            proc = start_cli(target, *RUN_ARGS)
            held = wait_until_held(conn, proc)
            batch_id = held[0]["batch_id"]
            before = ranges_by_status(conn, batch_id)
            private_cluster.stop("immediate")
            kill_process(proc)
        conn.close()
        restart(private_cluster)
        conn = psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row)

        assert ranges_by_status(conn, batch_id) == before
        assert batch_rows(conn, batch_id) == {"status": "ALLOCATED", **NOTHING_POSTED}
        staged = conn.execute(
            f"SELECT count(*) AS n FROM batch.stage_journal_entry_header_{batch_id}"
        ).fetchone()["n"]
        done_entries = conn.execute(
            "SELECT sum(je_count) AS n FROM batch.range WHERE batch_id = %s AND status = 'DONE'",
            (batch_id,)).fetchone()["n"]
        assert staged == done_entries

        proc = monthend_cli(target, "resume", str(batch_id), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert_committed(target, proc.stdout, TXNS)
        attempts = conn.execute("SELECT range_no, attempts FROM batch.range "
                                "WHERE batch_id = %s AND attempts <> 1 ORDER BY range_no",
                                (batch_id,)).fetchall()
        assert attempts == [{"range_no": h["range_no"], "attempts": 2} for h in held]
        check_invariants(conn, clean=clean_fingerprint(DEFAULT))
    finally:
        conn.close()


def test_live_claimers_range_is_not_claimed_again(target, conn):
    """A RUNNING range is re-claimed only once its claimer's backend is gone, even
    though the procedures (SECURITY DEFINER) cannot see other sessions' backend_start."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "1000", check=True)
    batch_id = conn.execute("CALL batch.start_run(%s, 2, 250, 3, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    preflight_and_allocate(conn, batch_id)

    def claim(worker: psycopg.Connection, name: str) -> tuple[int, int]:
        row = worker.execute("CALL batch.claim_range(%s, %s, NULL, NULL, NULL)",
                             (batch_id, name)).fetchone()
        return row["p_range_id"], row["p_attempt"]

    def connect() -> psycopg.Connection:
        return psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row)

    with connect() as first, connect() as second:
        first_range, first_attempt = claim(first, "first")
        second_range, _ = claim(second, "second")
        assert first_attempt == 1
        assert second_range != first_range
        first_pid = first.info.backend_pid
    wait_for(backends_gone(conn, [first_pid]), "the first claimer's backend to exit")
    with connect() as third:
        assert claim(third, "third") == (first_range, 2)
