"""Drives a batch through its phases. Every phase is a stored procedure; this
module only opens connections, calls them in order, runs the range workers, and
reports progress. No transaction data passes through it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from monthend import db
from monthend.errors import MonthendError, RunConflict, RunFailed

DEFAULT_RANGE_SIZE = 10_000
DEFAULT_MAX_ATTEMPTS = 3
RECONNECT_SECONDS = 30.0
IDLE_POLL_SECONDS = 0.25
# How often the monitor has the database judge the batch's alerts.
ALERT_SECONDS = 5.0


@dataclass
class WorkerReport:
    name: str
    ranges: int = 0
    failures: int = 0
    error: str | None = None


@dataclass
class Progress:
    """What the progress display is told; see monthend.display."""

    on_phase: Callable[[str], None] = lambda phase: None
    on_ranges: Callable[[dict[str, Any]], None] = lambda snapshot: None
    # Each monitor tick, with the monitor's connection: the live dashboard reads it.
    on_tick: Callable[[psycopg.Connection, int], None] = lambda conn, batch_id: None


@dataclass
class RunOptions:
    workers: int = 2
    range_size: int = DEFAULT_RANGE_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    worker_prefix: str = field(default_factory=socket.gethostname)


def _status(conn: psycopg.Connection, batch_id: int) -> dict[str, Any]:
    row = db.call_one(conn, "run_status", batch_id=batch_id)
    if row is None:
        raise RunConflict(f"batch {batch_id} does not exist; `monthend status` lists batches.")
    return row


def start(target: db.Target, period: str, options: RunOptions) -> int:
    with db.connect(target) as conn:
        row = db.call_one(conn, "start_run", period=period, workers=options.workers,
                          range_size=options.range_size, max_attempts=options.max_attempts)
    return int(row["p_batch_id"])


def _worker_loop(target: db.Target, batch_id: int, report: WorkerReport,
                 stop: threading.Event) -> None:
    """Claim and process ranges until none is left; retry through lost connections."""
    conn: psycopg.Connection | None = None
    lost_since: float | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = db.connect(target, application_name=f"monthend {report.name}")
                lost_since = None
            claim = db.call_one(conn, "claim_range", batch_id=batch_id, worker=report.name)
        except MonthendError as exc:
            if conn is not None and not conn.closed and not _is_connection_error(exc):
                # The batch left ALLOCATED (failed, cancelled, or finished): stop quietly.
                report.error = None if "ALLOCATED" in str(exc) else str(exc)
                break
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > RECONNECT_SECONDS:
                report.error = f"lost the database for {RECONNECT_SECONDS:.0f} s: {exc}"
                break
            _close_quietly(conn)
            conn = None
            time.sleep(1.0)
            continue
        if claim["p_range_id"] is None:
            if claim["p_remaining"] == 0:
                break
            time.sleep(IDLE_POLL_SECONDS)
            continue
        range_id, attempt = claim["p_range_id"], claim["p_attempt"]
        try:
            db.call(conn, "process_range", range_id=range_id)
            report.ranges += 1
        except MonthendError as exc:
            report.failures += 1
            # The database's message without its CONTEXT, which quotes the
            # whole generating statement.
            diag = getattr(exc.__cause__, "diag", None)
            error = (diag.message_primary if diag and diag.message_primary
                     else str(exc.__cause__ or exc)).strip()
            if conn.closed or _is_connection_error(exc):
                _close_quietly(conn)
                conn = None
                # The range stays RUNNING for a dead backend; claim_range will
                # hand it out again. Record the failed attempt when we can.
                try:
                    conn = db.connect(target, application_name=f"monthend {report.name}")
                except MonthendError:
                    time.sleep(1.0)
                    continue
            try:
                db.call(conn, "record_range_failure", range_id=range_id, attempt=attempt,
                        error=error)
            except MonthendError:
                _close_quietly(conn)
                conn = None
    _close_quietly(conn)


def _is_connection_error(exc: BaseException) -> bool:
    cause = exc.__cause__
    if not isinstance(cause, psycopg.Error):
        return False
    # psycopg makes some server errors OperationalError too (class 55, "batch is
    # FAILED"): only a missing SQLSTATE or classes 08/57 mean the link is gone.
    sqlstate = getattr(cause, "sqlstate", None) or ""
    if sqlstate:
        return sqlstate[:2] in ("08", "57")
    return isinstance(cause, psycopg.OperationalError)


def _rate(count: int | None, seconds: float | None) -> float | None:
    return round((count or 0) / seconds, 1) if seconds else None


def _evaluate_alerts(conn: psycopg.Connection, batch_id: int) -> None:
    """Have the database record alerts that changed (batch.evaluate_alerts).

    Alerts inform operators; a failure to evaluate them must not stop the run.
    """
    with contextlib.suppress(MonthendError):
        db.call(conn, "evaluate_alerts", batch_id=batch_id)


def _close_quietly(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()


def process_ranges(target: db.Target, batch_id: int, workers: int, worker_prefix: str,
                   progress: Progress) -> list[WorkerReport]:
    """Run ``workers`` connections claiming ranges; report progress until all stop."""
    stop = threading.Event()
    reports = [WorkerReport(f"{worker_prefix}/w{i + 1}") for i in range(workers)]
    threads = [threading.Thread(target=_worker_loop, args=(target, batch_id, r, stop),
                                name=r.name, daemon=True) for r in reports]
    for thread in threads:
        thread.start()
    try:
        with db.connect(target, application_name="monthend monitor") as monitor:
            next_alerts = 0.0
            while any(t.is_alive() for t in threads):
                if time.monotonic() >= next_alerts:
                    next_alerts = time.monotonic() + ALERT_SECONDS
                    _evaluate_alerts(monitor, batch_id)
                progress.on_tick(monitor, batch_id)
                progress.on_ranges(_status(monitor, batch_id))
                for thread in threads:
                    thread.join(timeout=0.5 / max(len(threads), 1))
            _evaluate_alerts(monitor, batch_id)
            progress.on_ranges(_status(monitor, batch_id))
            progress.on_tick(monitor, batch_id)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return reports


def drive(target: db.Target, batch_id: int, options: RunOptions,
          progress: Progress | None = None) -> dict[str, Any]:
    """Take a batch from whatever status it has to COMMITTED and post-processed."""
    progress = progress or Progress()
    with db.connect(target, application_name="monthend driver") as conn:
        row = _status(conn, batch_id)
        if row["status"] == "FAILED":
            db.call(conn, "reopen_batch", batch_id=batch_id)
            row = _status(conn, batch_id)
        while True:
            status = row["status"]
            if status == "STARTED":
                progress.on_phase("preflight")
                db.call(conn, "preflight", batch_id=batch_id)
            elif status == "PREFLIGHTED":
                progress.on_phase("allocation")
                db.call(conn, "allocate_ranges", batch_id=batch_id)
            elif status == "ALLOCATED":
                progress.on_phase("processing")
                reports = process_ranges(target, batch_id, options.workers,
                                         options.worker_prefix, progress)
                row = _status(conn, batch_id)
                if row["status"] == "ALLOCATED" and row["ranges_done"] != row["range_count"]:
                    problems = "; ".join(r.error for r in reports if r.error) or "workers stopped"
                    raise RunFailed(f"batch {batch_id} is unfinished ({row['ranges_done']} of "
                                    f"{row['range_count']} ranges done): {problems}\n"
                                    f"Finish it with `monthend resume {batch_id}`.")
                if row["status"] == "ALLOCATED":
                    progress.on_phase("validation")
                    db.call(conn, "validate_batch", batch_id=batch_id)
            elif status == "VALIDATED":
                progress.on_phase("commit")
                db.call(conn, "commit_batch", batch_id=batch_id)
            elif status == "COMMITTED":
                if "post_processing" not in (row["phase_seconds"] or {}):
                    progress.on_phase("post_processing")
                    db.call(conn, "post_process", batch_id=batch_id)
                    row = _status(conn, batch_id)
                return row
            elif status == "FAILED":
                raise RunFailed(f"batch {batch_id} failed: {row['error']}\n"
                                f"Fix the cause, then `monthend resume {batch_id}`, or "
                                f"`monthend cancel {batch_id}`.")
            elif status == "CANCELLED":
                raise RunConflict(f"batch {batch_id} was cancelled; start a new run.")
            row = _status(conn, batch_id)


def summary(target: db.Target, batch_id: int) -> dict[str, Any]:
    """The JSON document schedulers read: counts, dead letters, phases, throughput."""
    with db.connect(target) as conn:
        row = _status(conn, batch_id)
        dead = db.call(conn, "dead_letter_summary", batch_id=batch_id)
    elapsed = float(row["elapsed_seconds"] or 0)
    phases = {k: float(v) for k, v in (row["phase_seconds"] or {}).items()}
    processed = row["claimed_rows"] or 0
    return {
        "batch_id": row["batch_id"],
        "period": row["period"],
        "status": row["status"],
        "workers": row["workers"],
        "source_rows": row["source_rows"],
        "posted_rows": processed,
        "dead_letter_rows": row["dead_letter_rows"],
        "dead_letters_by_reason": {d["reason_code"]: d["rows"] for d in dead},
        "journal_entries": row["je_count"],
        "journal_lines": row["line_count"],
        "je_numbers": [row["first_je_number"], row["last_je_number"]]
        if row["je_count"] else None,
        "ranges": row["range_count"],
        "ranges_retried": row["retries"],
        "digest": row["digest"],
        "phase_seconds": phases,
        "elapsed_seconds": elapsed,
        "source_rows_per_second": _rate(row["source_rows"], elapsed),
        "journal_entries_per_second": _rate(row["je_count"], elapsed),
        "error": row["error"],
    }
