"""Crash and resume with real processes and real connections: the driver killed
with SIGKILL mid-run, a worker's backend terminated mid-range, an interrupted
batch cancelled, and the server itself crashing under a run. Each interrupted
run must end in exactly the ledger a clean run of the same data produces.

Ranges are held mid-processing by a gate, not by timing: a trigger on
batch.range_total (written by process_range in the same statement as the
range's staging rows) takes a shared advisory lock for every range but the
first, and the test holds that lock exclusively. So at the moment of the crash
range 1 is DONE, both workers sit inside process_range with their output
written but uncommitted, and every other range is PENDING.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pytest_postgresql.janitor import DatabaseJanitor

from conftest import monthend_cli
from ledger_fingerprint import ledger_fingerprint
from monthend import db, migrate
from monthend.embedded import TEST_SETTINGS, EmbeddedCluster

PERIOD = "2025-01"
TXNS = "3000"
BAD_ROWS = "0.02"
SEED = "7"
RANGE_SIZE = "250"
WORKERS = 2
GENERATE_ARGS = ("generate", "--period", PERIOD, "--txns", TXNS, "--bad-rows", BAD_ROWS,
                 "--seed", SEED)
RUN_ARGS = ("run", "--period", PERIOD, "--workers", str(WORKERS), "--range-size", RANGE_SIZE,
            "--json")
# Any key works: advisory locks are per database and every test has its own.
GATE_KEY = 774411
WAIT_SECONDS = 20.0

GATE_SQL = f"""
CREATE FUNCTION public.hold_range_at_gate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (SELECT rg.range_no FROM batch.range AS rg WHERE rg.range_id = NEW.range_id) > 1 THEN
        PERFORM pg_advisory_xact_lock_shared({GATE_KEY});
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER hold_range_at_gate BEFORE INSERT ON batch.range_total
    FOR EACH ROW EXECUTE FUNCTION public.hold_range_at_gate();
"""

WAITING_WORKERS_SQL = """
SELECT a.pid, rg.range_id, rg.range_no, rg.attempts, rg.batch_id
FROM pg_stat_activity AS a
JOIN batch.range AS rg ON rg.worker_pid = a.pid AND rg.status = 'RUNNING'
WHERE a.datname = current_database() AND a.application_name LIKE 'monthend %/w%'
  AND a.wait_event_type = 'Lock' AND a.wait_event = 'advisory'
ORDER BY rg.range_no
"""


# --- helpers -------------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment monthend_cli gives the CLI: only --dsn says where to connect."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PG") and k != "DATABASE_URL"}


def start_cli(target: db.Target, *args: str) -> subprocess.Popen[str]:
    """The real `monthend` command as a process the test can kill."""
    return subprocess.Popen([sys.executable, "-m", "monthend.cli", "--dsn", target.conninfo,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=cli_env())


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS,
             proc: subprocess.Popen[str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"monthend exited {proc.returncode} while waiting for {what}:\n"
                        f"{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Gate:
    """Holds every range but the first inside process_range until opened."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(GATE_SQL)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))

    def open(self) -> None:
        if not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))

    def remove(self) -> None:
        """Drop the trigger too, so later runs in this database are not held."""
        self.open()
        self.conn.execute("DROP TRIGGER hold_range_at_gate ON batch.range_total;"
                          "DROP FUNCTION public.hold_range_at_gate()")

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def gate(conninfo: str) -> Iterator[Gate]:
    the_gate = Gate(conninfo)
    try:
        yield the_gate
    finally:
        the_gate.close()


def wait_until_held(conn: psycopg.Connection, proc: subprocess.Popen[str]) -> list[dict]:
    """Block until range 1 is DONE and both workers wait at the gate mid-range."""

    def held() -> list[dict] | None:
        waiting = conn.execute(WAITING_WORKERS_SQL).fetchall()
        if len(waiting) < WORKERS:
            return None
        done = conn.execute("SELECT count(*) AS n FROM batch.range WHERE status = 'DONE'"
                            ).fetchone()["n"]
        return waiting if done >= 1 else None

    return wait_for(held, "range 1 DONE and both workers held mid-range", proc=proc)


def kill_driver(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def backends_gone(conn: psycopg.Connection, pids: list[int]) -> Callable[[], bool]:
    def gone() -> bool:
        row = conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s)",
                           (pids,)).fetchone()
        return row["n"] == 0

    return gone


def batch_rows(conn: psycopg.Connection, batch_id: int) -> dict[str, Any]:
    """What of a batch is visible outside its staging tables."""
    return conn.execute("""
        SELECT (SELECT status FROM batch.run WHERE batch_id = %(b)s) AS status,
               (SELECT count(*) FROM gl.journal_entry_header WHERE batch_id = %(b)s) AS headers,
               (SELECT count(*) FROM gl.journal_entry_line WHERE batch_id = %(b)s) AS lines,
               (SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n
                    ON n.oid = c.relnamespace
                 WHERE n.nspname = 'gl' AND c.relname LIKE '%%\\_b' || %(b)s) AS gl_partitions,
               (SELECT coalesce(max(je_numbers_used), 0) FROM gl.accounting_period)
                   AS je_numbers_used
        """, {"b": batch_id}).fetchone()


def stage_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'batch' "
                        "AND tablename LIKE 'stage\\_%' ORDER BY 1").fetchall()
    return [r["tablename"] for r in rows]


def ranges_by_status(conn: psycopg.Connection, batch_id: int) -> dict[str, list[int]]:
    rows = conn.execute("SELECT status, array_agg(range_no ORDER BY range_no) AS ranges "
                        "FROM batch.range WHERE batch_id = %s GROUP BY status",
                        (batch_id,)).fetchall()
    return {r["status"]: r["ranges"] for r in rows}


def assert_committed(target: db.Target, proc_stdout: str) -> dict[str, Any]:
    result = json.loads(proc_stdout)
    assert result["status"] == "COMMITTED", result
    assert result["posted_rows"] + result["dead_letter_rows"] == int(TXNS)
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    return result


@contextlib.contextmanager
def fresh_database(noproc: Any) -> Iterator[db.Target]:
    """Another clone of the migrated template on the test cluster, dropped after."""
    name = f"{noproc.dbname}_ref_{uuid.uuid4().hex[:8]}"
    janitor = DatabaseJanitor(user=noproc.user, host=noproc.host, port=noproc.port,
                              dbname=name, template_dbname=noproc.template_dbname,
                              password=noproc.password)
    with janitor:
        yield db.Target(f"host={noproc.host} port={noproc.port} user={noproc.user} "
                        f"dbname={name}", "--dsn")


@pytest.fixture
def clean_run(postgresql_noproc: Any) -> Callable[..., dict[str, Any]]:
    """The fingerprint of an uninterrupted run of the same data in a fresh database."""

    def run(with_ids: bool = True) -> dict[str, Any]:
        with fresh_database(postgresql_noproc) as ref:
            monthend_cli(ref, *GENERATE_ARGS, check=True)
            proc = monthend_cli(ref, *RUN_ARGS, check=True)
            result = json.loads(proc.stdout)
            assert result["status"] == "COMMITTED"
            assert result["ranges_retried"] == 0
            with psycopg.connect(ref.conninfo, autocommit=True) as ref_conn:
                return ledger_fingerprint(ref_conn, PERIOD, with_ids=with_ids)

    return run


# --- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("orphans", ["die", "finish"])
def test_resume_after_driver_killed(target, conn, clean_run, orphans):
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
        kill_driver(proc)

        before = ranges_by_status(conn, batch_id)
        assert before["DONE"] == [1]
        assert before["RUNNING"] == [h["range_no"] for h in held]
        assert before.get("PENDING"), "the kill must leave ranges not yet started"
        assert batch_rows(conn, batch_id) == {"status": "ALLOCATED", "headers": 0, "lines": 0,
                                              "gl_partitions": 0, "je_numbers_used": 0}
        if orphans == "die":
            wait_for(backends_gone(conn, [h["pid"] for h in held]),
                     "the killed driver's backends to notice and exit")
            assert ranges_by_status(conn, batch_id) == before
        the_gate.open()

        proc = monthend_cli(target, "resume", str(batch_id), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert_committed(target, proc.stdout)

    attempts = {r["range_no"]: r["attempts"] for r in conn.execute(
        "SELECT range_no, attempts FROM batch.range WHERE batch_id = %s", (batch_id,))}
    held_ranges = {h["range_no"] for h in held}
    # Only what was missing ran again: a range's second attempt only where the
    # killed attempt rolled back.
    assert attempts == {n: 2 if orphans == "die" and n in held_ranges else 1
                        for n in attempts}
    assert stage_tables(conn) == []
    assert ledger_fingerprint(conn, PERIOD) == clean_run()


def test_backend_terminated_mid_range_is_retried(target, conn, clean_run):
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
    result = assert_committed(target, out)
    assert result["ranges_retried"] == 1

    retried = conn.execute("SELECT attempts, status, worker_pid <> %s AS other_backend "
                           "FROM batch.range WHERE range_id = %s",
                           (victim["pid"], victim["range_id"])).fetchone()
    assert retried == {"attempts": 2, "status": "DONE", "other_backend": True}
    checks = conn.execute("SELECT status FROM batch.validation_result "
                          "WHERE range_id = %s AND check_name = 'range_attempt'",
                          (victim["range_id"],)).fetchall()
    assert checks == [{"status": "FAIL"}]
    assert ledger_fingerprint(conn, PERIOD) == clean_run()


def test_cancel_interrupted_batch_leaves_nothing(target, conn, clean_run):
    """`monthend cancel` of a batch whose driver was killed: no staging, nothing in
    gl, claims and dead letters released; the next run posts everything from 1."""
    monthend_cli(target, *GENERATE_ARGS, check=True)
    conn.execute(f"ALTER DATABASE {conn.info.dbname} "
                 "SET client_connection_check_interval = '100ms'")
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *RUN_ARGS)
        held = wait_until_held(conn, proc)
        batch_id = held[0]["batch_id"]
        kill_driver(proc)
        wait_for(backends_gone(conn, [h["pid"] for h in held]),
                 "the killed driver's backends to exit")
        assert len(stage_tables(conn)) == 2
        assert conn.execute("SELECT count(*) AS n FROM batch.source_claim WHERE batch_id = %s",
                            (batch_id,)).fetchone()["n"] > 0

        proc = monthend_cli(target, "cancel", str(batch_id), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout) == {"batch_id": batch_id, "status": "CANCELLED"}

        assert stage_tables(conn) == []
        assert batch_rows(conn, batch_id) == {"status": "CANCELLED", "headers": 0, "lines": 0,
                                              "gl_partitions": 0, "je_numbers_used": 0}
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
    result = assert_committed(target, proc.stdout)
    assert result["batch_id"] == batch_id + 1
    assert result["ranges_retried"] == 0
    assert result["je_numbers"] == [1, result["journal_entries"]]
    assert stage_tables(conn) == []
    # The cancelled batch used a batch id and a je_id block, so only the ids differ.
    assert ledger_fingerprint(conn, PERIOD, with_ids=False) == clean_run(with_ids=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """A cluster of this test's own, which it may crash. Commits are synchronous, so
    what the run committed before the crash is there after it."""
    settings = {**TEST_SETTINGS, "synchronous_commit": "on", "shared_buffers": "'32MB'",
                "max_connections": "40", "shared_preload_libraries": "''"}
    cluster = EmbeddedCluster(tmp_path / "pgdata", free_port(), settings, dbname="monthend")
    try:
        cluster.start()
        cluster.ensure_database()
        with psycopg.connect(cluster.dsn(), autocommit=True) as mig:
            migrate.apply(mig)
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(tmp_path / "pgdata", ignore_errors=True)


def test_resume_after_server_crash(private_cluster, clean_run):
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
            kill_driver(proc)
        conn.close()
        private_cluster.start()
        conn = psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row)

        assert ranges_by_status(conn, batch_id) == before
        assert batch_rows(conn, batch_id) == {"status": "ALLOCATED", "headers": 0, "lines": 0,
                                              "gl_partitions": 0, "je_numbers_used": 0}
        staged = conn.execute(
            f"SELECT count(*) AS n FROM batch.stage_journal_entry_header_{batch_id}"
        ).fetchone()["n"]
        done_entries = conn.execute(
            "SELECT sum(je_count) AS n FROM batch.range WHERE batch_id = %s AND status = 'DONE'",
            (batch_id,)).fetchone()["n"]
        assert staged == done_entries

        proc = monthend_cli(target, "resume", str(batch_id), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert_committed(target, proc.stdout)
        attempts = conn.execute("SELECT range_no, attempts FROM batch.range "
                                "WHERE batch_id = %s AND attempts <> 1 ORDER BY range_no",
                                (batch_id,)).fetchall()
        assert attempts == [{"range_no": h["range_no"], "attempts": 2} for h in held]
        assert stage_tables(conn) == []
        assert ledger_fingerprint(conn, PERIOD) == clean_run()
    finally:
        conn.close()


def test_live_claimers_range_is_not_claimed_again(target, conn):
    """A RUNNING range is re-claimed only once its claimer's backend is gone, even
    though the procedures (SECURITY DEFINER) cannot see other sessions' backend_start."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "1000", check=True)
    batch_id = conn.execute("CALL batch.start_run(%s, 2, 250, 3, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    conn.execute("CALL batch.preflight(%s)", (batch_id,))
    conn.execute("CALL batch.allocate_ranges(%s)", (batch_id,))

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
