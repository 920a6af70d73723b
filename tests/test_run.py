"""The run as a whole: gapless numbering within a period across batches, entries
complete and balanced, an idempotent second run, one active batch a period,
range retries and range failure, and nothing visible before the commit."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli

PERIOD = "2025-01"

SUMMARY_FIELDS = {
    "batch_id", "kind", "mode", "reverses_batch_id", "period", "status", "workers", "source_rows",
    "posted_rows",
    "dead_letter_rows", "dead_letters_by_reason", "journal_entries", "journal_lines",
    "je_numbers", "ranges", "ranges_retried", "digest", "phase_seconds", "elapsed_seconds",
    "source_rows_per_second", "journal_entries_per_second", "error",
}
PHASES = {"preflight", "preflight_ranges", "allocation", "processing", "validation_pieces",
          "validation", "commit", "post_processing"}


def generate(target, txns: int, seed: int = 1, bad: str = "0") -> None:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", str(txns), "--seed",
                 str(seed), "--bad-rows", bad, check=True)


def run_json(target, *extra: str, expect: int = 0) -> dict:
    proc = monthend_cli(target, "run", "--period", PERIOD, "--json", *extra)
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout)


def ledger_counts(conn) -> tuple[int, int]:
    row = conn.execute("SELECT (SELECT count(*) FROM gl.journal_entry_header) AS h, "
                       "(SELECT count(*) FROM gl.journal_entry_line) AS l").fetchone()
    return row["h"], row["l"]


def je_numbers(conn, batch_id: int | None = None) -> list[int]:
    rows = conn.execute(
        "SELECT je_number FROM gl.journal_entry_header "
        "WHERE period = %(p)s AND (%(b)s::bigint IS NULL OR batch_id = %(b)s) "
        "ORDER BY je_number", {"p": PERIOD, "b": batch_id}).fetchall()
    numbers = []
    for r in rows:
        prefix, _, digits = r["je_number"].rpartition("-")
        assert prefix == PERIOD, r["je_number"]
        numbers.append(int(digits))
    return sorted(numbers)


def assert_entries_complete_and_balanced(conn) -> None:
    """Every header has exactly its template's lines, no line lacks a header, and
    each entry balances in transaction and functional currency."""
    wrong = conn.execute("""
        WITH src AS (
            SELECT 'PREMIUM' AS source_type, txn_id AS source_id, txn_type
            FROM subledger.premium_transaction
            UNION ALL
            SELECT 'CLAIM', claim_id, txn_type FROM subledger.claims_transaction
        ), per_entry AS (
            SELECT h.je_id, h.source_type, h.je_seq, s.txn_type,
                   count(l.je_id) AS lines,
                   coalesce(sum(l.debit), 0) AS debit, coalesce(sum(l.credit), 0) AS credit,
                   coalesce(sum(l.functional_debit), 0) AS fd,
                   coalesce(sum(l.functional_credit), 0) AS fc
            FROM gl.journal_entry_header AS h
            JOIN src AS s ON s.source_type = h.source_type AND s.source_id = h.source_id
            LEFT JOIN gl.journal_entry_line AS l
              ON l.je_id = h.je_id AND l.je_date = h.je_date AND l.batch_id = h.batch_id
            GROUP BY h.je_id, h.source_type, h.je_seq, s.txn_type
        )
        SELECT e.* FROM per_entry AS e
        WHERE e.debit <> e.credit OR e.fd <> e.fc OR e.debit = 0
           OR e.lines <> (SELECT count(*) FROM gl.posting_rule AS r
                          WHERE r.source_type = e.source_type AND r.txn_type = e.txn_type
                            AND r.je_seq = e.je_seq)
        LIMIT 10
    """).fetchall()
    assert wrong == []
    orphans = conn.execute("""
        SELECT count(*) AS n FROM gl.journal_entry_line AS l
        WHERE NOT EXISTS (SELECT FROM gl.journal_entry_header AS h
                          WHERE h.je_id = l.je_id AND h.je_date = l.je_date
                            AND h.batch_id = l.batch_id)
    """).fetchone()["n"]
    assert orphans == 0
    dup = conn.execute("SELECT count(*) - count(DISTINCT je_id) AS ids, "
                       "count(*) - count(DISTINCT (period, je_number)) AS numbers, "
                       "count(*) - count(DISTINCT (source_type, source_id, je_seq)) AS sources "
                       "FROM gl.journal_entry_header").fetchone()
    assert dup == {"ids": 0, "numbers": 0, "sources": 0}


@pytest.mark.full
def test_numbering_gapless_across_batches_with_rejected_rows(target, conn):
    generate(target, 2000, bad="0.05")
    first = run_json(target, "--workers", "3", "--range-size", "300")
    assert first["status"] == "COMMITTED"
    assert first["dead_letter_rows"] > 0
    n = first["journal_entries"]
    assert n == 3 * first["posted_rows"]
    assert je_numbers(conn) == list(range(1, n + 1))
    assert first["je_numbers"] == [1, n]

    # More rows for the same period after the first commit: the next batch
    # continues at N+1, rejected rows again leaving no hole.
    generate(target, 700, seed=2, bad="0.05")
    second = run_json(target, "--workers", "2", "--range-size", "250")
    assert second["status"] == "COMMITTED"
    assert second["dead_letter_rows"] > 0
    m = n + second["journal_entries"]
    assert second["posted_rows"] > 0
    assert je_numbers(conn, second["batch_id"]) == list(range(n + 1, m + 1))
    assert second["je_numbers"] == [n + 1, m]
    assert je_numbers(conn) == list(range(1, m + 1))
    assert conn.execute("SELECT je_numbers_used FROM gl.accounting_period WHERE period = %s",
                        (PERIOD,)).fetchone()["je_numbers_used"] == m
    assert_entries_complete_and_balanced(conn)


@pytest.mark.full
def test_second_run_of_a_posted_period_posts_nothing(target, conn):
    generate(target, 800)
    first = run_json(target, "--range-size", "200")
    before = ledger_counts(conn)
    assert before == (first["journal_entries"], first["journal_lines"])

    proc = monthend_cli(target, "run", "--period", PERIOD, "--range-size", "200")
    assert proc.returncode == 0, proc.stderr
    assert "had nothing to post" in proc.stdout

    again = run_json(target)
    assert again["status"] == "COMMITTED"
    assert (again["source_rows"], again["posted_rows"], again["dead_letter_rows"],
            again["journal_entries"], again["ranges"], again["je_numbers"]) == (0, 0, 0, 0, 0,
                                                                              None)
    assert ledger_counts(conn) == before
    assert conn.execute("SELECT je_numbers_used FROM gl.accounting_period WHERE period = %s",
                        (PERIOD,)).fetchone()["je_numbers_used"] == first["journal_entries"]
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True


def wait_until_waiting_on_lock(conn, pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
        if row and row["wait_event_type"] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on a lock")


def test_start_run_on_two_connections_one_proceeds(target, conn):
    """Second start waits on the first's uncommitted batch, then is refused
    naming it."""
    generate(target, 100)
    with psycopg.connect(target.conninfo, row_factory=dict_row) as first, \
         psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as second:
        batch_id = first.execute(
            "CALL batch.start_run(%s, 2, 100, 3, NULL)", (PERIOD,)).fetchone()["p_batch_id"]
        outcome: dict = {}

        def start_second() -> None:
            try:
                outcome["row"] = second.execute("CALL batch.start_run(%s, 2, 100, 3, NULL)",
                                                (PERIOD,)).fetchone()
            except psycopg.Error as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=start_second)
        thread.start()
        wait_until_waiting_on_lock(conn, second.info.backend_pid)
        assert thread.is_alive()
        first.commit()
        thread.join(timeout=10)

    error = outcome.get("error")
    assert isinstance(error, psycopg.errors.LockNotAvailable), outcome
    assert error.diag.message_primary == (
        f"period {PERIOD} already has an unfinished batch {batch_id} (status STARTED)")
    assert f"monthend resume {batch_id}" in error.diag.message_hint
    assert [r["batch_id"] for r in conn.execute("SELECT batch_id FROM batch.run")] == [batch_id]
    # The first batch carries on to the end.
    resumed = monthend_cli(target, "resume", str(batch_id), "--json", check=True)
    assert json.loads(resumed.stdout)["status"] == "COMMITTED"


def hold_ranges_until_second_start(conn) -> None:
    """Ranges wait until a second batch has been asked for: the first run is then
    certainly unfinished when the other starts, however slowly either process
    comes up. A refused start still draws a batch_id from the identity sequence."""
    conn.execute("""
        CREATE FUNCTION public.hold_range() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1..1200 LOOP
                EXIT WHEN (SELECT last_value FROM batch.run_batch_id_seq) >= 2;
                PERFORM pg_sleep(0.05);
            END LOOP;
            RETURN NULL;
        END $$;
        CREATE TRIGGER hold_range BEFORE INSERT ON batch.range_total
            FOR EACH STATEMENT EXECUTE FUNCTION public.hold_range();
    """)


@pytest.mark.full
def test_two_concurrent_runs_one_exits_2_naming_the_other(target, conn):
    generate(target, 600)
    hold_ranges_until_second_start(conn)
    results: dict[int, object] = {}

    def run(i: int) -> None:
        results[i] = monthend_cli(target, "run", "--period", PERIOD, "--workers", "1",
                                  "--range-size", "150")

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    codes = sorted(p.returncode for p in results.values())
    assert codes == [0, 2], [(p.returncode, p.stderr) for p in results.values()]
    winner = conn.execute("SELECT batch_id, status FROM batch.run").fetchall()
    assert len(winner) == 1 and winner[0]["status"] == "COMMITTED"
    loser = next(p for p in results.values() if p.returncode == 2)
    assert f"already has an unfinished batch {winner[0]['batch_id']}" in loser.stderr
    assert f"monthend resume {winner[0]['batch_id']}" in loser.stderr
    assert_entries_complete_and_balanced(conn)


def fail_range(conn, range_no: int, attempts_failing: int | None) -> None:
    """Make range ``range_no`` raise on its first ``attempts_failing`` attempts
    (None: on every attempt). The attempt count is read from batch.range, which
    claim_range commits before the range runs, so it survives the rollback."""
    limit = "true" if attempts_failing is None else f"rg.attempts <= {attempts_failing}"
    conn.execute(f"""
        CREATE FUNCTION public.fail_range() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT FROM batch.range AS rg
                       WHERE rg.range_id = NEW.range_id AND rg.range_no = {range_no}
                         AND {limit}) THEN
                RAISE EXCEPTION 'injected failure in range {range_no}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_range BEFORE INSERT ON batch.range_total
            FOR EACH ROW EXECUTE FUNCTION public.fail_range();
    """)


@pytest.mark.full
def test_range_failing_once_is_retried_and_the_batch_commits(target, conn):
    generate(target, 1000)
    fail_range(conn, 2, attempts_failing=1)
    result = run_json(target, "--workers", "2", "--range-size", "150")
    assert result["status"] == "COMMITTED"
    assert result["ranges_retried"] == 1
    assert result["posted_rows"] == 1000

    ranges = conn.execute("SELECT range_no, status, attempts, last_error FROM batch.range "
                          "WHERE batch_id = %s ORDER BY range_no",
                          (result["batch_id"],)).fetchall()
    assert len(ranges) == result["ranges"] > 2
    for r in ranges:
        assert (r["status"], r["attempts"], r["last_error"]) == (
            "DONE", 2 if r["range_no"] == 2 else 1, None)
    attempts = conn.execute(
        "SELECT v.status, v.actual FROM batch.validation_result AS v "
        "JOIN batch.range AS rg USING (range_id) "
        "WHERE v.batch_id = %s AND v.check_name = 'range_attempt'",
        (result["batch_id"],)).fetchall()
    assert len(attempts) == 1
    assert attempts[0]["status"] == "FAIL"
    assert "injected failure in range 2" in attempts[0]["actual"]
    retry_events = conn.execute("SELECT message FROM batch.event "
                                "WHERE batch_id = %s AND kind = 'RANGE_RETRY'",
                                (result["batch_id"],)).fetchall()
    assert len(retry_events) == 1

    assert ledger_counts(conn) == (result["journal_entries"], result["journal_lines"])
    assert je_numbers(conn) == list(range(1, result["journal_entries"] + 1))
    assert_entries_complete_and_balanced(conn)
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True


@pytest.mark.full
def test_range_failing_every_attempt_fails_the_batch(target, conn):
    generate(target, 1000)
    fail_range(conn, 2, attempts_failing=None)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2",
                        "--range-size", "150", "--max-attempts", "2", timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    run = conn.execute("SELECT batch_id, status, error FROM batch.run").fetchone()
    assert run["status"] == "FAILED"
    assert run["error"].startswith("range 2 (")
    assert "failed after 2 attempts: injected failure in range 2" in run["error"]
    assert f"batch {run['batch_id']} failed: range 2 (" in proc.stderr
    assert "injected failure in range 2" in proc.stderr
    assert f"monthend resume {run['batch_id']}" in proc.stderr

    failed = conn.execute("SELECT status, attempts, last_error FROM batch.range "
                          "WHERE batch_id = %s AND range_no = 2",
                          (run["batch_id"],)).fetchone()
    assert (failed["status"], failed["attempts"]) == ("FAILED", 2)
    assert "injected failure in range 2" in failed["last_error"]

    # The ledger is untouched and no number of the period is used.
    assert ledger_counts(conn) == (0, 0)
    assert conn.execute("SELECT je_numbers_used FROM gl.accounting_period WHERE period = %s",
                        (PERIOD,)).fetchone()["je_numbers_used"] == 0


@pytest.mark.full
def test_failed_run_prints_one_json_document(target, conn):
    generate(target, 400)
    fail_range(conn, 1, attempts_failing=None)
    result = run_json(target, "--range-size", "100", "--max-attempts", "1", expect=1)
    assert result.keys() >= SUMMARY_FIELDS
    assert result["status"] == "FAILED"
    assert "range 1 (" in result["error"]
    assert "injected failure in range 1" in result["error"]
    assert ledger_counts(conn) == (0, 0)


@pytest.mark.full
def test_nothing_is_visible_before_the_commit(target, conn):
    """A DBA drives the phases by hand; an observer sees an empty ledger until
    commit_batch, then the whole batch at once."""
    generate(target, 700, bad="0.05")
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as dba:
        def call(sql: str, *params):
            cur = dba.execute(sql, params)
            return cur.fetchone() if cur.description else None

        batch_id = call("CALL batch.start_run(%s, 1, 200, 3, NULL)", PERIOD)["p_batch_id"]
        call("CALL batch.preflight(%s)", batch_id)
        assert ledger_counts(conn) == (0, 0)
        # Pre-flight's ranges, claimed and run like processing's.
        while (claim := call("CALL batch.claim_range(%s, 'dba', NULL, NULL, NULL)",
                             batch_id))["p_range_id"] is not None:
            call("CALL batch.process_range(%s)", claim["p_range_id"])
        assert ledger_counts(conn) == (0, 0)
        call("CALL batch.allocate_ranges(%s)", batch_id)
        assert ledger_counts(conn) == (0, 0)
        processed = 0
        while True:
            claim = call("CALL batch.claim_range(%s, 'dba', NULL, NULL, NULL)", batch_id)
            if claim["p_range_id"] is None:
                assert claim["p_remaining"] == 0
                break
            call("CALL batch.process_range(%s)", claim["p_range_id"])
            processed += 1
            assert ledger_counts(conn) == (0, 0)
        call("CALL batch.plan_validation_pieces(%s)", batch_id)
        pieces = conn.execute("SELECT piece_no FROM batch.validation_piece WHERE batch_id = %s "
                              "ORDER BY piece_no", (batch_id,)).fetchall()
        for piece in pieces:
            call("CALL batch.run_validation_piece(%s, %s)", batch_id, piece["piece_no"])
        call("CALL batch.validate_batch(%s)", batch_id)
        run = conn.execute("SELECT status, je_count, line_count, range_count FROM batch.run "
                           "WHERE batch_id = %s", (batch_id,)).fetchone()
        assert run["status"] == "VALIDATED"
        assert processed == run["range_count"] > 1
        assert run["je_count"] > 0
        assert ledger_counts(conn) == (0, 0)
        # The work is done, only staged.
        staged = conn.execute(
            f"SELECT (SELECT count(*) FROM batch.stage_journal_entry_header_{batch_id}) AS h, "
            f"(SELECT count(*) FROM batch.stage_journal_entry_line_{batch_id}) AS l").fetchone()
        assert (staged["h"], staged["l"]) == (run["je_count"], run["line_count"])

        # Inside the commit's transaction, before it commits: still nothing.
        with dba.transaction():
            call("CALL batch.commit_batch(%s)", batch_id)
            observer_counts = {}

            def observe() -> None:
                with psycopg.connect(target.conninfo, autocommit=True,
                                     row_factory=dict_row) as observer:
                    observer.execute("SET lock_timeout = '5s'")
                    observer_counts["during"] = ledger_counts(observer)

            thread = threading.Thread(target=observe)
            thread.start()
            thread.join(timeout=30)
            assert observer_counts.get("during") == (0, 0)
        assert ledger_counts(conn) == (run["je_count"], run["line_count"])
    assert conn.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                        (batch_id,)).fetchone()["status"] == "COMMITTED"
    assert je_numbers(conn) == list(range(1, run["je_count"] + 1))
    assert_entries_complete_and_balanced(conn)


@pytest.mark.full
def test_validation_counts_the_claims(target, conn):
    """Allocation takes the claimed rows from the ranges; validation's claim
    pieces count the claims themselves, and a claim of the batch that no range
    made fails the batch before anything is published."""
    generate(target, 500)
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as dba:
        def call(sql: str, *params):
            cur = dba.execute(sql, params)
            return cur.fetchone() if cur.description else None

        def claim_all() -> None:
            while (claim := call("CALL batch.claim_range(%s, 'dba', NULL, NULL, NULL)",
                                 batch_id))["p_range_id"] is not None:
                call("CALL batch.process_range(%s)", claim["p_range_id"])

        batch_id = call("CALL batch.start_run(%s, 1, 200, 3, NULL)", PERIOD)["p_batch_id"]
        call("CALL batch.preflight(%s)", batch_id)
        claim_all()
        call("CALL batch.allocate_ranges(%s)", batch_id)
        claim_all()
        # A claim no range made, written behind the batch's back.
        call("INSERT INTO batch.source_claim (period, source_type, source_id, generation, "
             "batch_id, je_offset) VALUES (%s, 'PREMIUM', 999999999, 0, %s, 0)",
             PERIOD, batch_id)
        call("CALL batch.plan_validation_pieces(%s)", batch_id)
        pieces = dba.execute("SELECT piece_no, stage_table, claim_period "
                             "FROM batch.validation_piece WHERE batch_id = %s ORDER BY piece_no",
                             (batch_id,)).fetchall()
        assert [(p["stage_table"], p["claim_period"]) for p in pieces
                if p["stage_table"] == "claim"] == [("claim", PERIOD)]
        for piece in pieces:
            call("CALL batch.run_validation_piece(%s, %s)", batch_id, piece["piece_no"])
        call("CALL batch.validate_batch(%s)", batch_id)
    run = conn.execute("SELECT status, claimed_rows, error FROM batch.run WHERE batch_id = %s",
                       (batch_id,)).fetchone()
    check = conn.execute("SELECT status, expected, actual FROM batch.validation_result "
                         "WHERE batch_id = %s AND check_name = 'claims_counted'",
                         (batch_id,)).fetchone()
    assert run["status"] == "FAILED"
    assert run["claimed_rows"] == 500
    assert "501 claims counted, 500 claimed" in run["error"]
    assert check == {"status": "FAIL", "expected": "500 claims",
                     "actual": "501 claims counted in 1 pieces"}
    assert ledger_counts(conn) == (0, 0)


@pytest.mark.full
def test_json_summary_fields(target, conn):
    generate(target, 900, bad="0.05")
    result = run_json(target, "--workers", "3", "--range-size", "200")
    assert result.keys() == SUMMARY_FIELDS
    run = conn.execute("SELECT batch_id, period, workers, source_rows, claimed_rows, "
                       "dead_letter_rows, je_count, line_count, range_count, "
                       "encode(digest, 'hex') AS digest FROM batch.run").fetchone()
    headers, lines = ledger_counts(conn)
    assert result["status"] == "COMMITTED"
    assert result["error"] is None
    assert (result["batch_id"], result["period"], result["workers"]) == (
        run["batch_id"], PERIOD, 3)
    assert result["source_rows"] == run["source_rows"] == 900
    assert result["posted_rows"] + result["dead_letter_rows"] == 900
    assert result["dead_letter_rows"] == sum(result["dead_letters_by_reason"].values()) > 0
    assert (result["journal_entries"], result["journal_lines"]) == (headers, lines)
    assert result["je_numbers"] == [1, headers]
    assert result["ranges"] == run["range_count"] > 1
    assert result["ranges_retried"] == 0
    assert result["digest"] == run["digest"] and len(result["digest"]) == 64
    assert result["phase_seconds"].keys() == PHASES
    # The phases up to the commit run one after another within the run's elapsed
    # time (post-processing follows the commit, which ends it); each is rounded to ms.
    in_run = [v for k, v in result["phase_seconds"].items() if k != "post_processing"]
    assert 0 < sum(in_run) <= result["elapsed_seconds"] + 0.001 * len(in_run), result
    assert result["elapsed_seconds"] > 0
    assert result["source_rows_per_second"] > 0
    assert result["journal_entries_per_second"] > 0


def test_refused_periods_exit_2(target, conn):
    conn.execute("CALL gl.open_period('2024-12')")
    conn.execute("CALL gl.close_period('2024-12')")
    for period, message in [("2025-13", "is not a period of the form YYYY-MM"),
                            ("2031-01", "accounting period 2031-01 does not exist"),
                            ("2024-12", "accounting period 2024-12 is CLOSED")]:
        proc = monthend_cli(target, "run", "--period", period)
        assert proc.returncode == 2, (period, proc.stderr)
        assert message in proc.stderr
    assert conn.execute("SELECT count(*) AS n FROM batch.run").fetchone()["n"] == 0
