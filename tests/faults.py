"""What the fault-injection tests share: the data a scenario runs, real
`monthend` processes to start and kill, ways to hold a run at a known point,
and `check_invariants`, the one judgement every scenario ends with.

Holding a run at a known point is done with locks, never with timing:

- the gate (`Gate`): a trigger on batch.range_total, which process_range writes
  in the same statement as the range's staging rows, takes a shared advisory
  lock for the ranges chosen, and the test holds that lock exclusively. A held
  range sits inside process_range with its output written but uncommitted.
- a phase blocker (`hold_lock`): a second connection takes, in an open
  transaction, a lock that a later phase needs; the phase's backend then shows
  ``wait_event_type = 'Lock'`` in pg_stat_activity (`wait_for_lock_wait`).
  Each caller says which lock and why.
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
from dataclasses import dataclass
from decimal import Decimal
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
from monthend.errors import ConfigurationError

PERIOD = "2025-01"
WAIT_SECONDS = 30.0
# Any key works: advisory locks are per database and every test has its own.
GATE_KEY = 774411


# --- data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One generated period and the range size it is run with: everything the
    ledger a run produces depends on (the number of workers is not). With
    ``period_end``, the batch under test is the period's period-end, after a
    clean run of the period (`prepare`)."""

    txns: int = 3000
    bad_rows: str = "0.02"
    seed: int = 7
    range_size: int = 250
    period: str = PERIOD
    period_end: bool = False

    def generate_args(self) -> tuple[str, ...]:
        return ("generate", "--period", self.period, "--txns", str(self.txns),
                "--bad-rows", self.bad_rows, "--seed", str(self.seed))

    def run_args(self, workers: int = 2, *extra: str) -> tuple[str, ...]:
        return ("run", "--period", self.period, "--workers", str(workers),
                "--range-size", str(self.range_size), "--json", *extra)

    def batch_args(self, workers: int = 2, *extra: str) -> tuple[str, ...]:
        """The command that makes the batch under test: the run, or the period-end."""
        if not self.period_end:
            return self.run_args(workers, *extra)
        return ("period-end", "--period", self.period, "--workers", str(workers),
                "--range-size", str(self.range_size), "--json", *extra)

    @property
    def kind(self) -> str:
        return "PERIOD_END" if self.period_end else "RUN"

    def generate(self, target: db.Target) -> dict[str, Any]:
        proc = monthend_cli(target, *self.generate_args(), "--json", check=True)
        return json.loads(proc.stdout)

    def prepare(self, target: db.Target) -> None:
        """The period's rows; for a period-end, posted by a clean run first."""
        self.generate(target)
        if self.period_end:
            proc = monthend_cli(target, *self.run_args(), check=True)
            assert json.loads(proc.stdout)["status"] == "COMMITTED", proc.stdout


DEFAULT = Dataset()


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


def clean_run_fingerprint(noproc: Any, dataset: Dataset, *, with_ids: bool = True
                          ) -> dict[str, Any]:
    """What an uninterrupted run of ``dataset`` posts, in a database of its own.
    Clones of the template (and freshly migrated private clusters) hand out the
    same ids, so ``with_ids=True`` compares digests too."""
    with fresh_database(noproc) as ref:
        dataset.prepare(ref)
        proc = monthend_cli(ref, *dataset.batch_args(), check=True)
        result = json.loads(proc.stdout)
        assert result["status"] == "COMMITTED", result
        assert result["ranges_retried"] == 0, result
        with psycopg.connect(ref.conninfo, autocommit=True) as ref_conn:
            return ledger_fingerprint(ref_conn, dataset.period, with_ids=with_ids)


# --- processes -----------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment monthend_cli gives the CLI: only --dsn says where to connect."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PG") and k != "DATABASE_URL"}


def start_cli(target: db.Target, *args: str) -> subprocess.Popen[str]:
    """The real `monthend` command as a process the test can kill."""
    return subprocess.Popen([sys.executable, "-m", "monthend.cli", "--dsn", target.conninfo,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=cli_env())


def with_options(target: db.Target, **settings: str) -> db.Target:
    """The same database, every session of the CLI starting with these settings
    (what PGOPTIONS or ALTER ROLE ... SET would give the runner's sessions)."""
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return db.Target(f"{target.conninfo} options='{options}'", "--dsn")


def kill_process(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGKILL: no handler runs, no connection is closed cleanly."""
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return out, err


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


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


def connect(conninfo: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row)


# --- holding the run at a known point ------------------------------------------------


GATE_SQL = """
CREATE FUNCTION public.hold_range_at_gate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (SELECT rg.range_no FROM batch.range AS rg WHERE rg.range_id = NEW.range_id)
       {predicate} THEN
        PERFORM pg_advisory_xact_lock_shared({key});
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER hold_range_at_gate BEFORE INSERT ON batch.range_total
    FOR EACH ROW EXECUTE FUNCTION public.hold_range_at_gate();
"""

WAITING_WORKERS_SQL = """
SELECT a.pid, a.application_name, rg.range_id, rg.range_no, rg.attempts, rg.batch_id
FROM pg_stat_activity AS a
JOIN batch.range AS rg ON rg.worker_pid = a.pid AND rg.status = 'RUNNING'
WHERE a.datname = current_database() AND a.application_name LIKE 'monthend %/w%'
  AND a.wait_event_type = 'Lock' AND a.wait_event = 'advisory'
ORDER BY rg.range_no
"""


class Gate:
    """Holds the ranges whose range_no satisfies ``predicate`` (SQL, e.g. "> 1")
    inside process_range until opened."""

    def __init__(self, conninfo: str, predicate: str = "> 1") -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(GATE_SQL.format(predicate=predicate, key=GATE_KEY))
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
def gate(conninfo: str, predicate: str = "> 1") -> Iterator[Gate]:
    the_gate = Gate(conninfo, predicate)
    try:
        yield the_gate
    finally:
        the_gate.close()


def held_workers(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(WAITING_WORKERS_SQL).fetchall()


def wait_until_held(conn: psycopg.Connection, proc: subprocess.Popen[str] | None,
                    workers: int = 2, done: int = 1) -> list[dict]:
    """Block until ``done`` ranges are DONE and ``workers`` workers wait at the gate."""

    def held() -> list[dict] | None:
        waiting = held_workers(conn)
        if len(waiting) < workers:
            return None
        # The held batch's processing ranges (a period-end follows its period's
        # run, whose ranges are DONE too).
        n = conn.execute("SELECT count(*) AS n FROM batch.range WHERE status = 'DONE' "
                         "AND stage = 'PROCESS' AND batch_id = %s",
                         (waiting[0]["batch_id"],)).fetchone()["n"]
        return waiting if n >= done else None

    return wait_for(held, f"{done} range(s) DONE and {workers} workers held mid-range",
                    proc=proc)


class LockHolder:
    """A transaction of its own holding one lock until released (or until the
    server goes away under it)."""

    def __init__(self, conninfo: str, statement: str) -> None:
        self.statement = statement
        self.conn = psycopg.connect(conninfo, autocommit=False)
        self.conn.execute(statement)

    def release(self) -> None:
        if not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                self.conn.rollback()
            self.conn.close()


@contextlib.contextmanager
def hold_lock(conninfo: str, statement: str) -> Iterator[LockHolder]:
    holder = LockHolder(conninfo, statement)
    try:
        yield holder
    finally:
        holder.release()


def wait_for_lock_wait(conn: psycopg.Connection, query_like: str,
                       proc: subprocess.Popen[str] | None = None,
                       application_like: str = "monthend%",
                       exclude: list[int] | None = None) -> dict:
    """Wait until a monthend backend running ``query_like`` (other than the
    ``exclude`` pids) waits on a lock."""

    def waiting() -> dict | None:
        return conn.execute(
            "SELECT pid, application_name, query, wait_event_type, wait_event "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE %s AND query LIKE %s AND wait_event_type = 'Lock' "
            "AND pid <> ALL(%s)",
            (application_like, query_like, exclude or [])).fetchone()

    return wait_for(waiting, f"a backend running {query_like!r} to wait on a lock", proc=proc)


# Where a run can be held, and how. The first two block a phase from the start
# on a lock it needs, taken before the run (the tables exist once the period is
# generated); "processing" holds ranges at the gate; the later points let the
# ranges through and then block one phase on a lock it needs, taken from a
# second connection while the ranges are still held (so the phase cannot have
# started yet):
# - preflight: SHARE on batch.range. Pre-flight's serial part gates the batch,
#   sweeps the strays (their dead letters and control totals written), then
#   waits for ROW EXCLUSIVE to cut the period's rows into ranges: all of it
#   uncommitted.
# - preflight_ranges: SHARE on the period's claim partition. The workers
#   claim pre-flight's ranges, lock and classify their rows, write their dead
#   letters and control totals, then wait for ROW EXCLUSIVE to write the
#   claims, each inside batch.process_range (batch.preflight_range). A
#   period-end's pre-flight ranges claim nothing: SHARE on
#   batch.fx_movement_part, where its ledger ranges write their sums (its
#   policy ranges go through).
# - allocation: SHARE UPDATE EXCLUSIVE on gl.posting_rule. Pre-flight only reads
#   it; allocate_ranges places the ranges, takes the batch's je_id block, then
#   waits to ANALYZE it (SHARE UPDATE EXCLUSIVE conflicts with itself).
# - validation: ACCESS SHARE on the batch's staging header table. The
#   header's index piece builds its unique index (SHARE, compatible), then
#   needs ACCESS EXCLUSIVE to make it the primary key ATTACH will adopt: it
#   waits there, uncommitted, beside the line table's pieces (the header's
#   count pieces queue behind it).
# - commit_attach: ACCESS SHARE on the staging line table. Validation only reads
#   it and builds an index on it (SHARE, compatible); commit_batch attaches the
#   header table, moves and renames it, then waits for ACCESS EXCLUSIVE to
#   attach the line table: half the batch attached, uncommitted.
# - commit_seal: a row lock (FOR SHARE) on audit.chain_head. The seal is the
#   commit's last statement, and audit.log_link locks the head row FOR UPDATE
#   to link it: everything else of the commit (both tables attached, numbers
#   advanced, dead letters resolved, status COMMITTED) is done, uncommitted.
#   Taken while validation is blocked as above, since every range's RANGE_DONE
#   record is appended under the same row lock.
# - post_processing: SHARE on batch.kpi, which only post-processing writes: the
#   batch is committed and post_process waits to record its KPIs.
HOLD_POINTS = ("preflight", "preflight_ranges", "allocation", "processing", "validation",
               "commit_attach", "commit_seal", "post_processing")
EARLY_POINTS = ("preflight", "preflight_ranges", "allocation")
# Where the held backends are the batch's workers, each with a range: a fault
# there fails an attempt at a range, which the workers retry.
WORKER_POINTS = ("preflight_ranges", "processing")
_PHASE_QUERY = {"preflight": "%batch.preflight%",
                "preflight_ranges": "%batch.process_range%",
                "allocation": "%batch.allocate_ranges%",
                "validation": "%batch.run_validation_piece%",
                "commit_attach": "%batch.commit_batch%",
                "commit_seal": "%batch.commit_batch%", "post_processing": "%batch.post_process%"}


class RunHold:
    """Holds a run at one of HOLD_POINTS. ``install`` before the run starts (the
    gate or the early lock must be in place), ``reach`` once it runs: returns the
    batch and the backends that wait. ``release`` lets everything go."""

    def __init__(self, conninfo: str, conn: psycopg.Connection, point: str,
                 after_ranges: int = 1, workers: int = 2, period: str = PERIOD,
                 kind: str = "RUN") -> None:
        assert point in HOLD_POINTS, point
        self.conninfo, self.conn, self.point = conninfo, conn, point
        self.after_ranges, self.workers, self.period = after_ranges, workers, period
        self.kind = kind
        self.gate: Gate | None = None
        self.locks: list[LockHolder] = []

    def install(self) -> RunHold:
        if self.point == "preflight":
            self._lock("LOCK TABLE batch.range IN SHARE MODE")
        elif self.point == "preflight_ranges" and self.kind == "PERIOD_END":
            self._lock("LOCK TABLE batch.fx_movement_part IN SHARE MODE")
        elif self.point == "preflight_ranges":
            self._lock(f"LOCK TABLE batch.source_claim_{self.period.replace('-', '_')} "
                       "IN SHARE MODE")
        elif self.point == "allocation":
            self._lock("LOCK TABLE gl.posting_rule IN SHARE UPDATE EXCLUSIVE MODE")
        else:
            self.gate = Gate(self.conninfo, f"> {self.after_ranges}")
        return self

    def _lock(self, statement: str) -> None:
        self.locks.append(LockHolder(self.conninfo, statement))

    def reach(self, proc: subprocess.Popen[str] | None, wait_phase: bool = True
              ) -> dict[str, Any]:
        """``wait_phase=False``: return once the phase's lock is in place and the
        ranges are let go, without waiting for the phase to block on it (a
        lock_timeout may end the wait before the test could see it)."""
        if self.point in EARLY_POINTS:
            batch_id = wait_for_status(self.conn, None, {"STARTED", "PREFLIGHTING"},
                                       proc)["batch_id"]
            if not wait_phase:
                return {"batch_id": batch_id, "held": [], "waiting": []}
            waiting = wait_for_lock_wait(self.conn, _PHASE_QUERY[self.point], proc)
            return {"batch_id": batch_id, "held": [], "waiting": [waiting["pid"]],
                    "application_name": waiting["application_name"]}
        assert self.gate is not None, "install() before the run starts"
        held = wait_until_held(self.conn, proc, workers=self.workers, done=self.after_ranges)
        batch_id = held[0]["batch_id"]
        if self.point == "processing":
            return {"batch_id": batch_id, "held": held, "waiting": [h["pid"] for h in held]}
        if self.point == "commit_attach":
            self._lock(f"LOCK TABLE batch.stage_journal_entry_line_{batch_id} "
                       "IN ACCESS SHARE MODE")
        elif self.point == "post_processing":
            self._lock("LOCK TABLE batch.kpi IN SHARE MODE")
        else:
            self._lock(f"LOCK TABLE batch.stage_journal_entry_header_{batch_id} "
                       "IN ACCESS SHARE MODE")
        self.gate.open()
        if not wait_phase:
            assert self.point != "commit_seal", "the seal is reached through validation"
            return {"batch_id": batch_id, "held": held, "waiting": []}
        if self.point == "commit_seal":
            wait_for_lock_wait(self.conn, _PHASE_QUERY["validation"], proc)
            self._lock("SELECT FROM audit.chain_head FOR SHARE")
            self.locks.pop(0).release()
        waiting = wait_for_lock_wait(self.conn, _PHASE_QUERY[self.point], proc)
        return {"batch_id": batch_id, "held": held, "waiting": [waiting["pid"]],
                "application_name": waiting["application_name"]}

    def release(self) -> None:
        for holder in self.locks:
            holder.release()
        self.locks = []
        if self.gate is not None:
            with contextlib.suppress(psycopg.Error):
                self.gate.open()

    def close(self) -> None:
        self.release()
        if self.gate is not None:
            self.gate.close()


@contextlib.contextmanager
def run_hold(conninfo: str, conn: psycopg.Connection, point: str, after_ranges: int = 1,
             workers: int = 2, period: str = PERIOD) -> Iterator[RunHold]:
    hold = RunHold(conninfo, conn, point, after_ranges, workers, period).install()
    try:
        yield hold
    finally:
        hold.close()


def backends_gone(conn: psycopg.Connection, pids: list[int]) -> Callable[[], bool]:
    def gone() -> bool:
        row = conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s)",
                           (pids,)).fetchone()
        return row["n"] == 0

    return gone


def batch_status(conn: psycopg.Connection, batch_id: int) -> str:
    return conn.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                        (batch_id,)).fetchone()["status"]


def wait_for_status(conn: psycopg.Connection, batch_id: int | None, statuses: set[str],
                    proc: subprocess.Popen[str] | None = None) -> dict:
    """Wait until the batch (None: the latest) reaches one of ``statuses``."""

    def reached() -> dict | None:
        row = conn.execute("SELECT batch_id, status FROM batch.run "
                           "WHERE %(b)s::bigint IS NULL OR batch_id = %(b)s "
                           "ORDER BY batch_id DESC LIMIT 1", {"b": batch_id}).fetchone()
        return row if row and row["status"] in statuses else None

    return wait_for(reached, f"batch {batch_id or '(latest)'} to be {'/'.join(statuses)}",
                    proc=proc)


# --- what the database shows ---------------------------------------------------------


def batch_rows(conn: psycopg.Connection, batch_id: int) -> dict[str, Any]:
    """What of a batch is visible outside its staging tables."""
    return conn.execute("""
        SELECT (SELECT status FROM batch.run WHERE batch_id = %(b)s) AS status,
               (SELECT count(*) FROM gl.journal_entry_header WHERE batch_id = %(b)s) AS headers,
               (SELECT count(*) FROM gl.journal_entry_line WHERE batch_id = %(b)s) AS lines,
               (SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n
                    ON n.oid = c.relnamespace
                 WHERE n.nspname = 'gl' AND c.relname LIKE 'journal\\_entry\\_%%'
                   AND c.relname LIKE '%%\\_b' || %(b)s) AS gl_partitions,
               -- The numbers of the batch's period its other committed batches
               -- (a period-end's run) did not use.
               (SELECT ap.je_numbers_used
                       - (SELECT coalesce(sum(o.je_count), 0) FROM batch.run AS o
                           WHERE o.period = r.period AND o.status = 'COMMITTED'
                             AND o.batch_id <> r.batch_id)
                  FROM batch.run AS r JOIN gl.accounting_period AS ap ON ap.period = r.period
                 WHERE r.batch_id = %(b)s) AS je_numbers_used
        """, {"b": batch_id}).fetchone()


NOTHING_POSTED = {"headers": 0, "lines": 0, "gl_partitions": 0, "je_numbers_used": 0}


def assert_all_or_nothing(conn: psycopg.Connection, batch_id: int) -> bool:
    """The batch is entirely in the ledger (committed, sealed, every row) or
    entirely absent (no row, no partition, no number used, no seal). Returns
    whether it is in."""
    rows = batch_rows(conn, batch_id)
    run = conn.execute("SELECT je_count, line_count FROM batch.run WHERE batch_id = %s",
                       (batch_id,)).fetchone()
    seals = conn.execute("SELECT count(*) AS n FROM audit.log "
                         "WHERE event = 'BATCH_COMMITTED' AND batch_id = %s",
                         (batch_id,)).fetchone()["n"]
    resolved = conn.execute("SELECT count(*) AS n FROM batch.dead_letter "
                            "WHERE resolved_by_batch = %s", (batch_id,)).fetchone()["n"]
    if rows["status"] == "COMMITTED":
        assert (rows["headers"], rows["lines"], rows["gl_partitions"], seals) == (
            run["je_count"], run["line_count"], 2 if run["je_count"] else 0, 1), rows
        return True
    assert {k: v for k, v in rows.items() if k != "status"} == NOTHING_POSTED, rows
    assert (seals, resolved) == (0, 0)
    return False


def stage_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'batch' "
                        "AND tablename LIKE 'stage\\_%' ORDER BY 1").fetchall()
    return [r["tablename"] for r in rows]


def ranges_by_status(conn: psycopg.Connection, batch_id: int) -> dict[str, list[int]]:
    rows = conn.execute("SELECT status, array_agg(range_no ORDER BY range_no) AS ranges "
                        "FROM batch.range WHERE batch_id = %s GROUP BY status",
                        (batch_id,)).fetchall()
    return {r["status"]: r["ranges"] for r in rows}


def range_attempts(conn: psycopg.Connection, batch_id: int) -> dict[int, int]:
    return {r["range_no"]: r["attempts"] for r in conn.execute(
        "SELECT range_no, attempts FROM batch.range WHERE batch_id = %s", (batch_id,))}


def assert_committed(target: db.Target, stdout: str, source_rows: int | None = None
                     ) -> dict[str, Any]:
    """The driver's JSON says COMMITTED and `monthend verify` agrees."""
    result = json.loads(stdout)
    assert result["status"] == "COMMITTED", result
    if source_rows is not None:
        assert result["posted_rows"] + result["dead_letter_rows"] == source_rows
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    return result


# --- the invariants ------------------------------------------------------------------


# Source rows a period's runs must account for: those dated in the period, and
# strays (no date, or dated where no OPEN period takes them), which the first
# pre-flight dead-letters. Each is posted (live entries in the ledger: more
# postings than reversals), reversed and not posted again, or has an open dead
# letter from a committed batch; never two of these, never none. A period-end's
# entries (source types UPR and FX_REVALUATION) are made from its items, not
# from source rows: _POSTED_ONCE_SQL accounts for those.
_ACCOUNTING_SQL = """
WITH p AS (
    SELECT start_date, end_date FROM gl.accounting_period WHERE period = %(p)s
), src AS (
    SELECT s.source_type, s.source_id, s.amount
    FROM subledger.source_transaction AS s CROSS JOIN p
    WHERE s.txn_date BETWEEN p.start_date AND p.end_date
       OR s.txn_date IS NULL
       OR NOT EXISTS (SELECT FROM gl.accounting_period AS ap
                      WHERE ap.status = 'OPEN' AND s.txn_date BETWEEN ap.start_date
                                                                  AND ap.end_date)
), posted AS (
    SELECT h.source_type, h.source_id
    FROM gl.journal_entry_header AS h
    WHERE h.period = %(p)s AND h.source_type NOT IN ('UPR', 'FX_REVALUATION')
    GROUP BY h.source_type, h.source_id
    HAVING count(*) FILTER (WHERE h.reverses_je_id IS NULL)
           > count(*) FILTER (WHERE h.reverses_je_id IS NOT NULL)
), unposted AS (
    SELECT DISTINCT h.source_type, h.source_id
    FROM gl.journal_entry_header AS h
    WHERE h.period = %(p)s AND h.source_type NOT IN ('UPR', 'FX_REVALUATION')
    EXCEPT
    SELECT * FROM posted
), dead AS (
    SELECT DISTINCT d.source_type, d.source_id
    FROM batch.dead_letter AS d JOIN batch.run AS r ON r.batch_id = d.batch_id
    WHERE d.status = 'OPEN' AND r.status = 'COMMITTED'
      AND d.reason_code IS NOT NULL AND coalesce(d.detail, '') <> ''
), judged AS (
    SELECT s.*, po.source_id IS NOT NULL AS is_posted, de.source_id IS NOT NULL AS is_dead,
           un.source_id IS NOT NULL AS is_reversed
    FROM src AS s
    LEFT JOIN posted AS po ON po.source_type = s.source_type AND po.source_id = s.source_id
    LEFT JOIN unposted AS un ON un.source_type = s.source_type AND un.source_id = s.source_id
    LEFT JOIN dead AS de ON de.source_type = s.source_type AND de.source_id = s.source_id
)
SELECT count(*) AS source_rows,
       coalesce(sum(amount), 0) AS source_amount,
       count(*) FILTER (WHERE is_posted) AS posted_rows,
       coalesce(sum(amount) FILTER (WHERE is_posted), 0) AS posted_amount,
       count(*) FILTER (WHERE is_dead) AS dead_rows,
       coalesce(sum(amount) FILTER (WHERE is_dead), 0) AS dead_amount,
       count(*) FILTER (WHERE is_reversed) AS reversed_rows,
       coalesce(sum(amount) FILTER (WHERE is_reversed), 0) AS reversed_amount,
       count(*) FILTER (WHERE is_posted AND is_dead) AS both,
       count(*) FILTER (WHERE NOT is_posted AND NOT is_dead AND NOT is_reversed) AS neither,
       (SELECT count(*) FROM posted AS po
         WHERE NOT EXISTS (SELECT FROM src AS s WHERE s.source_type = po.source_type
                                                  AND s.source_id = po.source_id))
           AS posted_not_in_source
FROM judged
"""

_ENTRIES_SQL = """
WITH per_entry AS (
    SELECT h.je_id, h.source_type, h.je_seq, t.txn_type, h.source_amount, s.amount,
           -- A live entry: not reversing, not reversed. Only a live one must
           -- carry its source row's amount (a reversed row may be corrected).
           h.reverses_je_id IS NULL
               AND NOT EXISTS (SELECT FROM gl.journal_entry_header AS r
                               WHERE r.reverses_je_id = h.je_id) AS live,
           count(l.je_id) AS lines,
           coalesce(sum(l.debit), 0) AS debit, coalesce(sum(l.credit), 0) AS credit,
           coalesce(sum(l.functional_debit), 0) AS fd,
           coalesce(sum(l.functional_credit), 0) AS fc
    FROM gl.journal_entry_header AS h
    LEFT JOIN batch.entry_source AS s
      ON s.source_type = h.source_type AND s.source_id = h.source_id
    LEFT JOIN subledger.source_transaction AS t
      ON t.source_type = h.source_type AND t.source_id = h.source_id
    LEFT JOIN gl.journal_entry_line AS l
      ON l.je_id = h.je_id AND l.je_date = h.je_date AND l.batch_id = h.batch_id
    WHERE h.period = %(p)s
    GROUP BY h.je_id, h.source_type, h.je_seq, t.txn_type, h.source_amount, s.amount,
             h.reverses_je_id
)
SELECT count(*) FILTER (WHERE debit <> credit) AS unbalanced,
       count(*) FILTER (WHERE fd <> fc) AS unbalanced_functional,
       -- A revaluation moves the functional amounts only.
       count(*) FILTER (WHERE debit = 0 AND fd = 0) AS empty,
       count(*) FILTER (WHERE live AND source_amount IS DISTINCT FROM amount)
           AS amount_not_source,
       -- A period-end's entry is two lines, its item's debit and credit.
       count(*) FILTER (WHERE lines <> CASE WHEN e.source_type IN ('UPR', 'FX_REVALUATION')
                                             THEN 2
                                             ELSE (SELECT count(*) FROM gl.posting_rule AS r
                                                   WHERE r.source_type = e.source_type
                                                     AND r.txn_type = e.txn_type
                                                     AND r.je_seq = e.je_seq) END)
           AS wrong_line_count
FROM per_entry AS e
"""

_POSTED_ONCE_SQL = """
SELECT (SELECT count(*) FROM (SELECT FROM gl.journal_entry_header AS h
                              GROUP BY h.source_type, h.source_id, h.je_seq
                              HAVING count(*) FILTER (WHERE h.reverses_je_id IS NULL)
                                     - count(*) FILTER (WHERE h.reverses_je_id IS NOT NULL)
                                     NOT IN (0, 1)) AS x) AS entries_live_twice,
       (SELECT count(*) - count(DISTINCT je_id) FROM gl.journal_entry_header)
           AS duplicate_je_ids,
       (SELECT count(*) FROM gl.journal_entry_line AS l
         WHERE NOT EXISTS (SELECT FROM gl.journal_entry_header AS h
                           WHERE h.je_id = l.je_id AND h.je_date = l.je_date
                             AND h.batch_id = l.batch_id)) AS lines_without_header,
       -- Every posted entry belongs to the batch that claimed its row, every
       -- reversing entry to the batch that claimed the row's reversal.
       (SELECT count(*) FROM gl.journal_entry_header AS h
         WHERE h.reverses_je_id IS NULL
           AND NOT EXISTS (SELECT FROM batch.source_claim AS c
                           WHERE c.source_type = h.source_type AND c.source_id = h.source_id
                             AND c.batch_id = h.batch_id)) AS entries_without_claim,
       (SELECT count(*) FROM gl.journal_entry_header AS h
         WHERE h.reverses_je_id IS NOT NULL
           AND NOT EXISTS (SELECT FROM batch.source_reversal AS r
                           WHERE r.source_type = h.source_type AND r.source_id = h.source_id
                             AND r.batch_id = h.batch_id)) AS reversals_without_claim,
       (SELECT count(*) FROM (SELECT h.source_type, h.source_id
                              FROM gl.journal_entry_header AS h
                              GROUP BY h.source_type, h.source_id
                              HAVING count(DISTINCT h.batch_id)
                                         FILTER (WHERE h.reverses_je_id IS NULL)
                                     - count(DISTINCT h.batch_id)
                                         FILTER (WHERE h.reverses_je_id IS NOT NULL) > 1) AS x)
           AS rows_live_in_two_batches,
       -- Every item of a committed period-end is one entry of that batch.
       (SELECT count(*) FROM batch.period_end_item AS i
         JOIN batch.run AS r ON r.batch_id = i.batch_id AND r.status = 'COMMITTED'
         WHERE NOT EXISTS (SELECT FROM gl.journal_entry_header AS h
                           WHERE h.source_type = i.item_kind AND h.source_id = i.item_id
                             AND h.batch_id = i.batch_id AND h.reverses_je_id IS NULL))
           AS items_not_posted
"""

_NUMBERING_SQL = """
SELECT count(*) AS entries, count(DISTINCT h.je_number) AS distinct_numbers,
       coalesce(min(split_part(h.je_number, '-', 3)::bigint), 0) AS lo,
       coalesce(max(split_part(h.je_number, '-', 3)::bigint), 0) AS hi,
       count(*) FILTER (WHERE h.je_number NOT LIKE %(p)s || '-%%') AS foreign_numbers,
       (SELECT je_numbers_used FROM gl.accounting_period WHERE period = %(p)s) AS used
FROM gl.journal_entry_header AS h
WHERE h.period = %(p)s
"""

_BATCHES_SQL = """
SELECT r.batch_id, r.status, r.source_rows, r.claimed_rows, r.dead_letter_rows,
       r.je_count, r.line_count,
       (SELECT count(*) FROM batch.range AS rg
         WHERE rg.batch_id = r.batch_id AND rg.status <> 'DONE') AS ranges_not_done,
       (SELECT count(*) FROM gl.journal_entry_header AS h WHERE h.batch_id = r.batch_id)
           AS headers,
       (SELECT count(*) FROM gl.journal_entry_line AS l WHERE l.batch_id = r.batch_id)
           AS lines,
       (SELECT count(*) FROM audit.log AS a
         WHERE a.event = 'BATCH_COMMITTED' AND a.batch_id = r.batch_id) AS seals,
       (SELECT count(*) FROM audit.log AS a
         WHERE a.event = 'RANGE_DONE' AND a.batch_id = r.batch_id) AS range_done_events,
       (SELECT count(*) FROM batch.range AS rg WHERE rg.batch_id = r.batch_id) AS ranges
FROM batch.run AS r
WHERE r.period = %(p)s
ORDER BY r.batch_id
"""


def check_invariants(conn: psycopg.Connection, period: str = PERIOD, *,
                     clean: dict[str, Any] | None = None, with_ids: bool = True,
                     finished: bool = True) -> dict[str, Any]:
    """Everything that must hold after any fault once the period's batch is
    finished (``finished=False``: only what holds at any moment, e.g. right
    after a crash, when a batch may still be unfinished):

    - posted + dead-lettered = source, in count and amount, each source row
      exactly one of the two;
    - every entry balances in transaction and functional currency, has its
      template's lines and its source row's amount;
    - the period's numbers are exactly 1..N, N the period's used numbers;
    - no source row posted twice, every entry under the batch that claimed it;
    - audit.verify_chain(), audit.verify_ledger() and audit.verify_batch(b) of
      every committed batch find nothing;
    - an unfinished batch has nothing in the ledger; a committed one all of it,
      one seal, one RANGE_DONE record per range, no staging left;
    - with ``clean``, the ledger, ranges, dead letters and seal equal a clean
      run's (`ledger_fingerprint`).

    Returns the counts, for the caller's own assertions."""
    failures: list[str] = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            failures.append(message)

    with conn.cursor(row_factory=dict_row) as cur:
        params = {"p": period}
        batches = cur.execute(_BATCHES_SQL, params).fetchall()
        committed = [b for b in batches if b["status"] == "COMMITTED"]
        unfinished = [b for b in batches if b["status"] not in ("COMMITTED", "CANCELLED")]
        for b in batches:
            if b["status"] == "COMMITTED":
                expect(b["ranges_not_done"] == 0 and b["seals"] == 1
                       and b["range_done_events"] == b["ranges"]
                       and (b["headers"], b["lines"]) == (b["je_count"], b["line_count"])
                       and b["claimed_rows"] + b["dead_letter_rows"] == b["source_rows"],
                       f"committed batch not whole: {b}")
            else:
                expect((b["headers"], b["lines"], b["seals"]) == (0, 0, 0),
                       f"unfinished batch visible in the ledger: {b}")
        if finished:
            expect(not unfinished, f"unfinished batches: {unfinished}")
            expect(stage_tables(conn) == [], f"staging left behind: {stage_tables(conn)}")

        acc = cur.execute(_ACCOUNTING_SQL, params).fetchone()
        expect(acc["both"] == 0, f"rows both posted and dead-lettered: {acc}")
        expect(acc["posted_not_in_source"] == 0, f"posted rows not of this period: {acc}")
        if finished:
            expect(acc["neither"] == 0, f"source rows neither posted nor dead-lettered: {acc}")
            expect(acc["posted_rows"] + acc["dead_rows"] + acc["reversed_rows"]
                   == acc["source_rows"]
                   and acc["posted_amount"] + acc["dead_amount"] + acc["reversed_amount"]
                   == acc["source_amount"],
                   f"posted + dead-lettered + reversed <> source: {acc}")

        entries = cur.execute(_ENTRIES_SQL, params).fetchone()
        expect(all(v == 0 for v in entries.values()), f"entries wrong: {entries}")
        once = cur.execute(_POSTED_ONCE_SQL).fetchone()
        expect(all(v == 0 for v in once.values()), f"posted more than once: {once}")
        numbers = cur.execute(_NUMBERING_SQL, params).fetchone()
        n = numbers["used"]
        expect(numbers["entries"] == numbers["distinct_numbers"] == n
               and numbers["foreign_numbers"] == 0
               and (n == 0 or (numbers["lo"], numbers["hi"]) == (1, n)),
               f"numbering not 1..N gapless: {numbers}")

        chain = cur.execute("SELECT * FROM audit.verify_chain()").fetchall()
        expect(chain == [], f"verify_chain: {chain}")
        ledger = cur.execute("SELECT * FROM audit.verify_ledger()").fetchall()
        expect(ledger == [], f"verify_ledger: {ledger}")
        for b in committed:
            problems = cur.execute("SELECT * FROM audit.verify_batch(%s)",
                                   (b["batch_id"],)).fetchall()
            expect(problems == [], f"verify_batch({b['batch_id']}): {problems}")

    if clean is not None:
        got = ledger_fingerprint(conn, period, with_ids=with_ids)
        differing = sorted(k for k in set(got) | set(clean) if got.get(k) != clean.get(k))
        expect(not differing, "differs from the clean run in "
               + ", ".join(f"{k}: {got.get(k)!r} != {clean.get(k)!r}" for k in differing)[:3000])
    assert not failures, "invariants broken:\n  " + "\n  ".join(failures)
    return {"batches": batches, "posted_rows": acc["posted_rows"],
            "dead_rows": acc["dead_rows"], "source_rows": acc["source_rows"],
            "source_amount": Decimal(acc["source_amount"]), "entries": numbers["entries"]}


# --- a cluster a test may crash ------------------------------------------------------


PRIVATE_PORTS = range(54351, 54400)


def free_port() -> int:
    """A free port for a private cluster, away from the shared clusters' ports."""
    for port in PRIVATE_PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PRIVATE_PORTS}")


@contextlib.contextmanager
def private_cluster(directory: Path) -> Iterator[EmbeddedCluster]:
    """A migrated cluster of the caller's own, which it may crash. Commits are
    synchronous, so what a run committed before a crash is there after it."""
    settings = {**TEST_SETTINGS, "synchronous_commit": "on", "shared_buffers": "'32MB'",
                "max_connections": "40", "shared_preload_libraries": "''",
                # Recovery restarts the server at once after a backend crash.
                "restart_after_crash": "on"}
    cluster = EmbeddedCluster(directory / "pgdata", free_port(), settings, dbname="monthend")
    try:
        cluster.start()
        cluster.ensure_database()
        with psycopg.connect(cluster.dsn(), autocommit=True) as mig:
            migrate.apply(mig, with_demo_tools=True)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(directory / "pgdata", ignore_errors=True)


def restart(cluster: EmbeddedCluster, seconds: float = 20) -> None:
    """Start a stopped private cluster again. Its port lies in the kernel's
    ephemeral range (32768-60999 here): while the server was down, any client's
    outgoing connection may have been given it as its local port, and until
    that connection ends the server cannot listen on it."""
    deadline = time.monotonic() + seconds
    while True:
        offset = cluster.log_file.stat().st_size if cluster.log_file.exists() else 0
        try:
            cluster.start()
            return
        except ConfigurationError:
            with cluster.log_file.open() as handle:
                handle.seek(offset)
                port_taken = "Address already in use" in handle.read()
            if not port_taken or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def crash_backend(cluster: EmbeddedCluster, pid: int) -> None:
    """SIGKILL one backend of ``cluster`` and wait until the postmaster has ended
    every session, reinitialized and accepts connections again."""
    log = cluster.log_file
    offset = log.stat().st_size
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        with log.open() as handle:
            handle.seek(offset)
            return "all server processes terminated; reinitializing" in handle.read()

    wait_for(restarted, "the postmaster to restart every session")
    wait_until_accepting(cluster)


def wait_until_accepting(cluster: EmbeddedCluster, timeout: float = 60) -> None:
    """After a crash the postmaster recovers on its own; wait for it."""

    def accepting() -> bool:
        try:
            with psycopg.connect(cluster.dsn(), connect_timeout=2) as probe:
                probe.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    wait_for(accepting, "the server to accept connections again", timeout=timeout)
