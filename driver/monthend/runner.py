"""Drives a batch through its phases. Every phase is a stored procedure; this
module only opens connections, calls them in order, runs the range workers, and
reports progress. No transaction data passes through it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
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
    # Something the operator should know (fewer workers than asked, and why).
    on_note: Callable[[str], None] = lambda note: None
    on_ranges: Callable[[dict[str, Any]], None] = lambda snapshot: None
    # Each monitor tick, with the monitor's connection: the live dashboard reads it.
    on_tick: Callable[[psycopg.Connection, int], None] = lambda conn, batch_id: None


@dataclass
class RunOptions:
    workers: int = 2
    range_size: int = DEFAULT_RANGE_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    worker_prefix: str = field(default_factory=socket.gethostname)
    # DRAFT: every phase up to validation, then the batch waits to be
    # finalized or discarded.
    mode: str = "FINAL"
    # At most this many worker connections, whatever the server could take.
    max_connections: int | None = None


@dataclass(frozen=True)
class WorkerBudget:
    """How many range workers to open: what was asked, bounded by the server's
    free connections (more fail outright: "sorry, too many clients already"),
    by its cores when the DBA recorded them (more only queue on them), and by
    --max-connections."""

    requested: int
    granted: int
    limits: dict[str, int]

    def note(self) -> str | None:
        if self.granted >= self.requested:
            return None
        bound = ", ".join(f"{name} {value}" for name, value in self.limits.items())
        return (f"running {self.granted} range worker(s) of the {self.requested} asked ({bound})")


def worker_budget(target: db.Target, requested: int,
                  max_connections: int | None = None) -> WorkerBudget:
    """The workers to open for ``requested``: no more than the server's free
    connections (one kept for the run's monitor), its cores
    (gl.setting.server_cores) less the monthend workers already running on it,
    and ``max_connections``."""
    with db.connect(target, application_name="monthend budget") as conn:
        capacity = db.call_one(conn, "connection_capacity")
    assert capacity is not None
    # This session closes before the workers open; the monitor takes one.
    limits = {"free connections on the server":
              max(int(capacity["usable"]) - int(capacity["used"]), 1)}
    if capacity["server_cores"]:
        limits["server cores less running workers"] = max(
            int(capacity["server_cores"]) - int(capacity["running_workers"]), 1)
    if max_connections:
        limits["--max-connections"] = max_connections
    return WorkerBudget(requested, min(requested, *limits.values()), limits)


def _status(conn: psycopg.Connection, batch_id: int) -> dict[str, Any]:
    row = db.call_one(conn, "run_status", batch_id=batch_id)
    if row is None:
        raise RunConflict(f"batch {batch_id} does not exist; `monthend status` lists batches.")
    return row


def start(target: db.Target, period: str, options: RunOptions) -> int:
    with db.connect(target) as conn:
        row = db.call_one(conn, "start_run", period=period, workers=options.workers,
                          range_size=options.range_size, max_attempts=options.max_attempts,
                          mode=options.mode)
    return int(row["p_batch_id"])


def start_period_end(target: db.Target, period: str, options: RunOptions) -> int:
    """Open a PERIOD_END batch (UPR, FX revaluation); it then goes through the
    same phases as a run."""
    with db.connect(target) as conn:
        row = db.call_one(conn, "start_period_end", period=period, workers=options.workers,
                          range_size=options.range_size, max_attempts=options.max_attempts,
                          mode=options.mode)
    return int(row["p_batch_id"])


def start_auto_reversal(target: db.Target, period: str, options: RunOptions) -> int | None:
    """Open the AUTO_REVERSAL of the previous period's FX revaluation when one
    is due (the first batch of a period); None when nothing is due."""
    with db.connect(target) as conn:
        row = db.call_one(conn, "start_auto_reversal", period=period, workers=options.workers,
                          range_size=options.range_size, max_attempts=options.max_attempts)
    return None if row is None or row["p_batch_id"] is None else int(row["p_batch_id"])


def finalize(target: db.Target, batch_id: int) -> None:
    """Commit a draft, in one transaction with the check that its inputs are unchanged."""
    with db.connect(target) as conn:
        db.call(conn, "finalize_draft", batch_id=batch_id)


def discard(target: db.Target, batch_id: int) -> None:
    """Remove a draft and everything it holds."""
    with db.connect(target) as conn:
        db.call(conn, "discard_draft", batch_id=batch_id)


def start_reversal(target: db.Target, reverses_batch_id: int, reason: str, note: str | None,
                   method: str, period: str | None,
                   source_ids: tuple[list[str], list[int]] | None,
                   options: RunOptions) -> int:
    """Open a REVERSAL batch; it then goes through the same phases as a run."""
    types, ids = source_ids if source_ids else (None, None)
    with db.connect(target) as conn:
        row = db.call_one(conn, "start_reversal", reverses_batch_id=reverses_batch_id,
                          reason=reason, note=note, method=method, period=period,
                          source_types=types, source_ids=ids, workers=options.workers,
                          range_size=options.range_size, max_attempts=options.max_attempts)
    return int(row["p_batch_id"])


def _worker_loop(target: db.Target, batch_id: int, report: WorkerReport,
                 stop: threading.Event, drained: threading.Event) -> None:
    """Claim and process ranges until none is left; retry through lost
    connections. A worker with nothing to claim while others still hold
    ranges waits for ``drained``, which the worker that finds no range left
    sets, so the phase ends as soon as its last range does."""
    conn: psycopg.Connection | None = None
    lost_since: float | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = db.connect(target, application_name=f"monthend {report.name}")
                lost_since = None
            claim = db.call_one(conn, "claim_range", batch_id=batch_id, worker=report.name)
        except MonthendError as exc:
            if not _is_lost(exc, conn):
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
                drained.set()
                break
            drained.wait(IDLE_POLL_SECONDS)
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
            if _is_lost(exc, conn):
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


# Class 57 codes that end the session: terminated by an administrator, crash
# of another server process, server starting or stopping. query_canceled
# (57014: statement_timeout, pg_cancel_backend) leaves the session usable and
# is a failure of the statement, not of the link.
_SESSION_ENDED = ("57P01", "57P02", "57P03")


def _sqlstate(exc: BaseException) -> str:
    return getattr(exc.__cause__, "sqlstate", None) or ""


def _is_connection_error(exc: BaseException) -> bool:
    cause = exc.__cause__
    if not isinstance(cause, psycopg.Error):
        return False
    # psycopg makes some server errors OperationalError too (class 55, "batch is
    # FAILED"): only a missing SQLSTATE, class 08 or a session-ending class 57
    # code mean the link is gone.
    sqlstate = _sqlstate(exc)
    if sqlstate:
        return sqlstate[:2] == "08" or sqlstate in _SESSION_ENDED
    return isinstance(cause, psycopg.OperationalError)


def _is_lost(exc: BaseException, conn: psycopg.Connection | None) -> bool:
    return conn is None or conn.closed or conn.broken or _is_connection_error(exc)


class _Session:
    """One of the driver's own connections (phases, status, the monitor),
    opened again when it is lost: a restarted server or a terminated backend
    costs a reconnect, not the run. After RECONNECT_SECONDS without the
    database it gives up, naming the batch and how to finish it."""

    def __init__(self, target: db.Target, batch_id: int, application_name: str) -> None:
        self.target = target
        self.batch_id = batch_id
        self.application_name = application_name
        self.conn: psycopg.Connection | None = None
        self._lost_since: float | None = None
        # The first connection fails at once: a wrong DSN is not an outage.
        self.conn = db.connect(target, application_name=application_name)

    def connection(self) -> psycopg.Connection:
        while self.conn is None or self.conn.closed:
            try:
                self.conn = db.connect(self.target, application_name=self.application_name)
            except MonthendError as exc:
                if not _is_connection_error(exc):
                    raise
                self.wait(exc)
        return self.conn

    def wait(self, exc: BaseException) -> None:
        """The link is gone: drop it, wait a moment, or give up."""
        _close_quietly(self.conn)
        self.conn = None
        self._lost_since = self._lost_since or time.monotonic()
        if time.monotonic() - self._lost_since > RECONNECT_SECONDS:
            raise RunFailed(f"lost the database for {RECONNECT_SECONDS:.0f} s while running "
                            f"batch {self.batch_id}: {exc}\nWhen it is back, finish the batch "
                            f"with `monthend resume {self.batch_id}`.") from exc
        time.sleep(1.0)

    def read(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """A query that changes nothing: repeated through lost connections."""
        while True:
            conn = self.connection()
            try:
                rows = db.call(conn, name, **params)
            except MonthendError as exc:
                if not _is_lost(exc, conn):
                    raise
                self.wait(exc)
                continue
            self._lost_since = None
            return rows

    def status(self) -> dict[str, Any]:
        rows = self.read("run_status", batch_id=self.batch_id)
        if not rows:
            raise RunConflict(f"batch {self.batch_id} does not exist; `monthend status` lists "
                              "batches.")
        return rows[0]

    def phase(self, name: str, status: str) -> None:
        """Call one phase procedure, which the batch being ``status`` called for.

        Returns when the procedure ran, and also when the batch's status must
        decide what happened: the connection was lost during the call (it may
        or may not have committed), or the procedure refused because the batch
        is no longer ``status`` (another driver, or an orphaned backend of a
        killed one, did the phase meanwhile). The caller reads the status next.
        """
        conn = self.connection()
        try:
            db.call(conn, name, batch_id=self.batch_id)
        except MonthendError as exc:
            if _is_lost(exc, conn):
                self.wait(exc)
                return
            sqlstate = _sqlstate(exc)
            if sqlstate == "55000" and self.status()["status"] != status:
                return
            if sqlstate in ("55P03", "57014"):
                # lock_timeout or statement_timeout: the phase rolled back, the
                # batch is as it was.
                raise RunFailed(f"batch {self.batch_id}: {name} stopped: {exc}\nThe batch is "
                                f"{status}; finish it with `monthend resume {self.batch_id}`."
                                ) from exc
            raise
        self._lost_since = None

    def close(self) -> None:
        _close_quietly(self.conn)
        self.conn = None


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
                   progress: Progress, max_connections: int | None = None) -> list[WorkerReport]:
    """Run up to ``workers`` connections claiming ranges (as many as the server
    can serve: worker_budget); report progress until all stop."""
    budget = worker_budget(target, workers, max_connections)
    if budget.note():
        progress.on_note(str(budget.note()))
    workers = budget.granted
    stop, drained = threading.Event(), threading.Event()
    reports = [WorkerReport(f"{worker_prefix}/w{i + 1}") for i in range(workers)]
    threads = [threading.Thread(target=_worker_loop, args=(target, batch_id, r, stop, drained),
                                name=r.name, daemon=True) for r in reports]
    for thread in threads:
        thread.start()
    monitor: _Session | None = None
    try:
        monitor = _Session(target, batch_id, "monthend monitor")
        next_alerts = 0.0
        while any(t.is_alive() for t in threads):
            if time.monotonic() >= next_alerts:
                next_alerts = time.monotonic() + ALERT_SECONDS
                _evaluate_alerts(monitor.connection(), batch_id)
            progress.on_tick(monitor.connection(), batch_id)
            progress.on_ranges(monitor.status())
            for thread in threads:
                thread.join(timeout=0.5 / max(len(threads), 1))
        _evaluate_alerts(monitor.connection(), batch_id)
        progress.on_ranges(monitor.status())
        progress.on_tick(monitor.connection(), batch_id)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        if monitor is not None:
            monitor.close()
    return reports


class _StageMovedOn(Exception):
    """The batch left ALLOCATED while its staging tables were being prepared."""


def _on_stage_connection(target: db.Target, work: Callable[[psycopg.Connection], None]) -> None:
    """Run ``work`` on a connection of its own, again on a new one when the
    link is lost (a restarted server), as a phase would, for up to
    RECONNECT_SECONDS. ``work`` must be safe to run again. Raises
    _StageMovedOn when the database refuses because the batch is no longer
    ALLOCATED (another driver validated it meanwhile, or it failed: the caller
    reads its status next), RunFailed on any other error."""
    lost_since: float | None = None
    while True:
        try:
            with db.connect(target, application_name="monthend stage") as conn:
                work(conn)
            return
        except MonthendError as exc:
            if _sqlstate(exc) == "55000":
                raise _StageMovedOn() from exc
            if not _is_connection_error(exc):
                raise RunFailed(str(exc)) from exc
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > RECONNECT_SECONDS:
                raise RunFailed(f"lost the database for {RECONNECT_SECONDS:.0f} s: {exc}"
                                ) from exc
            time.sleep(1.0)


def prepare_stage(target: db.Target, batch_id: int, options: RunOptions) -> None:
    """Validation's heavy half: the batch's staging tables indexed, analyzed and
    counted in pieces (batch.plan_validation_pieces), which as many connections as
    the batch may use take one after another, longest first
    (batch.run_validation_piece)."""
    pieces: deque[int] = deque()

    def plan(conn: psycopg.Connection) -> None:
        db.call(conn, "plan_validation_pieces", batch_id=batch_id)
        pieces.clear()
        pieces.extend(r["piece_no"] for r in db.call(conn, "validation_pieces_left",
                                                     batch_id=batch_id))

    try:
        _on_stage_connection(target, plan)
    except _StageMovedOn:
        return
    except RunFailed as exc:
        raise _stage_stopped(batch_id, str(exc)) from exc
    if not pieces:
        return
    budget = worker_budget(target, min(len(pieces), options.workers), options.max_connections)
    lock = threading.Lock()
    errors: list[str] = []
    moved_on = threading.Event()

    def take() -> int | None:
        with lock:
            if errors or moved_on.is_set() or not pieces:
                return None
            return pieces.popleft()

    def prepare() -> None:
        piece = take()

        def work(conn: psycopg.Connection) -> None:
            nonlocal piece
            while piece is not None:
                # A piece whose connection was lost is done again: done, it
                # is left as it is.
                db.call(conn, "run_validation_piece", batch_id=batch_id, piece_no=piece)
                piece = take()

        try:
            if piece is not None:
                _on_stage_connection(target, work)
        except _StageMovedOn:
            moved_on.set()
        except RunFailed as exc:
            with lock:
                errors.append(str(exc))

    threads = [threading.Thread(target=prepare, daemon=True) for _ in range(budget.granted)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors and not moved_on.is_set():
        raise _stage_stopped(batch_id, "; ".join(errors))


def _stage_stopped(batch_id: int, problem: str) -> RunFailed:
    return RunFailed(f"batch {batch_id}: preparing its staging tables stopped: {problem}\n"
                     f"The batch is ALLOCATED; finish it with `monthend resume {batch_id}`.")


def _run_workers(target: db.Target, session: _Session, batch_id: int, status: str,
                 options: RunOptions, progress: Progress) -> dict[str, Any]:
    """The batch's workers through the ranges of its stage (pre-flight's while
    PREFLIGHTING, processing's while ALLOCATED); the batch's status after."""
    reports = process_ranges(target, batch_id, options.workers, options.worker_prefix,
                             progress, options.max_connections)
    row = session.status()
    if row["status"] == status and row["stage_ranges_left"]:
        problems = "; ".join(r.error for r in reports if r.error) or "workers stopped"
        stage = "pre-flight" if status == "PREFLIGHTING" else "processing"
        raise RunFailed(f"batch {batch_id} is unfinished ({row['stage_ranges_left']} ranges "
                        f"left to {stage}): {problems}\n"
                        f"Finish it with `monthend resume {batch_id}`.")
    return row


# How long a joiner waits, its stage's ranges all done, for the batch to move
# on (its driver allocating between pre-flight and processing).
JOIN_WAIT_SECONDS = 60.0


def join_batch(target: db.Target, batch_id: int, workers: int, worker_prefix: str,
               progress: Progress, max_connections: int | None = None) -> list[WorkerReport]:
    """Work on a batch another driver runs, through pre-flight's ranges and then
    processing's, until it has no range left to run (or stays between its
    stages for JOIN_WAIT_SECONDS: its driver is gone, and resume finishes it)."""
    reports: list[WorkerReport] = []
    idle_since: float | None = None
    with db.connect(target, application_name="monthend joiner") as conn:
        while True:
            row = _status(conn, batch_id)
            if row["status"] not in ("STARTED", "PREFLIGHTING", "PREFLIGHTED", "ALLOCATED"):
                return reports
            if row["stage_ranges_left"]:
                idle_since = None
                done = process_ranges(target, batch_id, workers, worker_prefix, progress,
                                      max_connections)
                reports += done
                if any(r.error for r in done):
                    # The workers stopped on an error: the caller reports it.
                    return reports
                continue
            if row["status"] == "ALLOCATED":
                return reports
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > JOIN_WAIT_SECONDS:
                return reports
            time.sleep(IDLE_POLL_SECONDS)


def drive(target: db.Target, batch_id: int, options: RunOptions,
          progress: Progress | None = None) -> dict[str, Any]:
    """Take a batch from whatever status it has to COMMITTED and post-processed
    (a draft: to DRAFT, validated and waiting to be finalized or discarded).

    Every step is decided by the batch's status as the database has it, read
    again after each phase, so a phase whose connection was lost, or that
    another driver finished first, is neither lost nor done twice."""
    progress = progress or Progress()
    session = _Session(target, batch_id, "monthend driver")
    try:
        row = session.status()
        if row["status"] == "FAILED":
            session.phase("reopen_batch", "FAILED")
            row = session.status()
        while True:
            status = row["status"]
            if status == "STARTED":
                progress.on_phase("preflight")
                session.phase("preflight", status)
            elif status == "PREFLIGHTING":
                progress.on_phase("preflight_ranges")
                row = _run_workers(target, session, batch_id, status, options, progress)
                if row["status"] == status:
                    progress.on_phase("allocation")
                    session.phase("allocate_ranges", status)
            elif status == "PREFLIGHTED":
                progress.on_phase("allocation")
                session.phase("allocate_ranges", status)
            elif status == "ALLOCATED":
                progress.on_phase("processing")
                row = _run_workers(target, session, batch_id, status, options, progress)
                if row["status"] == "ALLOCATED":
                    progress.on_phase("validation")
                    prepare_stage(target, batch_id, options)
                    if session.status()["status"] == "ALLOCATED":
                        session.phase("validate_batch", status)
            elif status == "VALIDATED":
                progress.on_phase("commit")
                session.phase("commit_batch", status)
            elif status == "DRAFT":
                return row
            elif status == "COMMITTED":
                if "post_processing" in (row["phase_seconds"] or {}):
                    return row
                progress.on_phase("post_processing")
                session.phase("post_process", status)
            elif status == "FAILED":
                raise RunFailed(f"batch {batch_id} failed: {row['error']}\n"
                                f"Fix the cause, then `monthend resume {batch_id}`, or "
                                f"`monthend cancel {batch_id}`.")
            elif status == "CANCELLED":
                raise RunConflict(f"batch {batch_id} was cancelled; start a new run.")
            elif status == "SUPERSEDED":
                raise RunConflict(f"draft {batch_id} was superseded by a newer draft of "
                                  f"{row['period']}: finalize that one, or remove this one "
                                  f"with `monthend discard {batch_id}`.")
            else:
                raise RunConflict(f"batch {batch_id} is {status}, which this driver does not "
                                  f"know; `monthend status {batch_id}` shows it.")
            row = session.status()
    finally:
        session.close()


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
        "kind": row["kind"],
        "mode": row["mode"],
        "reverses_batch_id": row["reverses_batch_id"],
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
