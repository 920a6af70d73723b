"""``monthend bench``: one measured run of the posting pipeline on fresh data.

Steps, all on the server (no row passes through the driver):

1. the server settings the figures depend on, and whether they are durable;
2. N synthetic source rows in a fresh period (``subledger.generate_transactions``);
   with ``--policies P``, the policies its premium rows do not write are the
   book: written the month before by a load of its own, posted by a run
   before anything is timed, so that the period-end finds P policies;
3. unless skipped, the rows processed once by 1 worker, pre-flight through
   pre-commit validation, and that batch cancelled (its claims released, so
   the same rows are unposted again): the baseline of the scaling figure;
4. the same rows run by W workers from start to committed and post-processed:
   end to end, phases, throughput, commit, the seal where the run records it;
5. the raw-write reference: the committed batch's headers and lines copied by
   one plain ``INSERT ... SELECT`` a table into unindexed logged tables, which
   are dropped again whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from monthend import db, runner
from monthend.errors import ConfigurationError, MonthendError, RunFailed
from monthend.queries import query

FIRST_FREE_PERIOD = "2040-01"
LEDGER_TABLES = ("journal_entry_header", "journal_entry_line")
SCRATCH_PREFIX = "bench_raw_"
SCALING_COMPARES = ("the processing phase (every range claimed and processed, first range "
                    "started to last range done) of identical rows, claims and ranges: "
                    "1 worker, then W workers")

# The requirements' targets: (field, comparison, threshold, what it measures).
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("source_txns_per_second", ">=", 50_000, "end to end, source transactions/s"),
    ("ratio", "<=", 1.5, "end to end / raw write"),
    ("serial_share", "<=", 0.05, "wall time with fewer than two backends busy / end to end"),
    ("commit_seconds", "<=", 1.0, "commit, seconds"),
    ("driver_peak_rss_mb", "<=", 100, "driver peak RSS, MB"),
    ("scaling", ">=", 1.4, "processing, 1 worker / W workers"),
)

PHASE_ORDER = ("preflight", "preflight_ranges", "allocation", "processing", "validation_pieces",
               "validation", "commit", "post_processing")
SETTING_NAMES = ("server_version", "fsync", "synchronous_commit", "wal_level",
                 "full_page_writes", "shared_buffers", "work_mem", "maintenance_work_mem",
                 "max_wal_size", "jit")


@dataclass
class BenchOptions:
    txns: int
    workers: int = 2
    period: str | None = None
    bad_rows: float = 0.0
    seed: int = 1
    range_size: int = runner.DEFAULT_RANGE_SIZE
    scaling: bool = True
    # Policies written by the period's end; None: only those of the period's own rows.
    policies: int | None = None


class BenchFailed(MonthendError):
    """The benchmark stopped; ``result`` holds what was measured, with the error."""

    def __init__(self, cause: MonthendError, result: dict[str, Any]) -> None:
        super().__init__(str(cause))
        self.exit_code = cause.exit_code
        self.result = result


Log = Callable[[str], None]


def is_durable(settings: dict[str, Any]) -> bool:
    """A commit survives a crash of the server or the machine.

    remote_write and remote_apply also wait for the local flush, as ``on`` does.
    """
    return (settings.get("fsync") == "on"
            and settings.get("synchronous_commit") in ("on", "remote_write", "remote_apply")
            and settings.get("wal_level") in ("replica", "logical"))


def peak_rss_mb() -> float:
    """This process's peak resident set, threads included (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _composed(name: str, **identifiers: sql.Identifier) -> sql.Composed:
    return sql.SQL(query(name)).format(**identifiers)


def _execute(conn: psycopg.Connection, name: str, params: dict[str, Any] | None = None,
             **identifiers: sql.Identifier) -> int:
    """Run a named query with identifiers filled in; return the rows it affected."""
    with db.wrap_errors():
        return conn.execute(_composed(name, **identifiers), params).rowcount


def _status(conn: psycopg.Connection, batch_id: int) -> dict[str, Any]:
    row = db.call_one(conn, "run_status", batch_id=batch_id)
    if row is None:
        raise RunFailed(f"batch {batch_id} disappeared")
    return row


def _expect(conn: psycopg.Connection, batch_id: int, status: str) -> dict[str, Any]:
    row = _status(conn, batch_id)
    if row["status"] != status:
        raise RunFailed(f"batch {batch_id} is {row['status']}, expected {status}: "
                        f"{row['error'] or 'no error recorded'}")
    return row


# Timings and rates are measurements, not money: floats, and JSON numbers in the
# bench document (jsonout's exact decimal strings are for amounts).
def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _rate(count: Any, seconds: float | None) -> float | None:
    return round(float(count or 0) / seconds, 1) if seconds else None


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so that cleanup in ``finally`` runs."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def server_settings(conn: psycopg.Connection) -> dict[str, Any]:
    row = db.call_one(conn, "bench_server_settings") or {}
    settings: dict[str, Any] = {name: row.get(name) for name in SETTING_NAMES}
    settings["cores"] = os.cpu_count()
    return settings


def _month(period: str, months: int) -> str:
    """The period ``months`` months after (before, when negative) ``period``."""
    index = int(period[:4]) * 12 + int(period[5:7]) - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _not_fresh(conn: psycopg.Connection, period: str) -> list[str]:
    """Why the period is not fresh for a benchmark; empty when it is."""
    state = db.call_one(conn, "bench_period_state", period=period) or {}
    reasons = [text for key, text in (("has_source_rows", "has source rows"),
                                      ("has_batch", "has a batch"),
                                      ("has_partition", "has ledger partitions"))
               if state.get(key)]
    if state.get("period_status") not in (None, "OPEN"):
        reasons.append(f"is {state['period_status']}")
    return reasons


def choose_period(conn: psycopg.Connection, period: str | None,
                  with_book: bool = False) -> tuple[str, str]:
    """A period with no source rows, no batch and no ledger partition (and, with
    a book, the month before it likewise); and how it was chosen."""
    if period is None:
        first = FIRST_FREE_PERIOD
        while True:
            row = db.call_one(conn, "bench_free_period", first=first)
            if row is None:
                wanted = "no two free months in a row" if with_book else "no free period"
                raise ConfigurationError(f"{wanted} in the 100 years from "
                                         f"{FIRST_FREE_PERIOD}; name one with --period.")
            if not with_book:
                return row["period"], f"the first free period from {FIRST_FREE_PERIOD}"
            after = _month(row["period"], 1)
            if not _not_fresh(conn, after):
                return after, (f"the first free period from {FIRST_FREE_PERIOD} "
                               "after a free one for the book")
            first = after
    reasons = _not_fresh(conn, period)
    if reasons:
        raise ConfigurationError(f"period {period} is not fresh: it {', '.join(reasons)}. "
                                 "Name an unused period, or leave out --period to take the "
                                 f"first free one from {FIRST_FREE_PERIOD}.")
    if with_book:
        before = _month(period, -1)
        reasons = _not_fresh(conn, before)
        if reasons:
            raise ConfigurationError(
                f"the book of earlier policies is written in {before}, the month before "
                f"period {period}, which is not fresh: it {', '.join(reasons)}. Name a "
                "period whose previous month is unused too, or leave out --policies.")
    return period, "given with --period"


def _book_txns(missing: int) -> int:
    """Source rows of a generated load whose premium rows (70%, rounded) write
    at least ``missing`` policies."""
    txns = -(-missing * 10 // 7)
    while txns > 1 and round((txns - 1) * 0.7) >= missing:
        txns -= 1
    return txns


def _checkpoint(conn: psycopg.Connection) -> bool:
    """CHECKPOINT when the role may (superuser or pg_checkpoint); False otherwise."""
    try:
        db.call(conn, "bench_checkpoint")
    except ConfigurationError:
        return False
    return True


def _progress(log: Log, label: str) -> runner.Progress:
    return runner.Progress(on_phase=lambda phase: log(f"{label}: {phase}"),
                           on_note=lambda note: log(f"{label}: {note}"))


def _baseline(target: db.Target, period: str, options: BenchOptions, log: Log,
              result: dict[str, Any]) -> None:
    """1 worker through processing and validation, then cancel: the scaling baseline."""
    run_options = runner.RunOptions(workers=1, range_size=options.range_size)
    detail = result["scaling_detail"]
    with db.connect(target, application_name="monthend bench") as conn:
        result["checkpoint_before_passes"] = _checkpoint(conn)
        batch_id = runner.start(target, period, run_options)
        detail["baseline_batch_id"] = batch_id
        log(f"scaling baseline: batch {batch_id}, 1 worker, pre-flight to validation")
        try:
            db.call(conn, "preflight", batch_id=batch_id)
            _expect(conn, batch_id, "PREFLIGHTING")
            runner.process_ranges(target, batch_id, 1, run_options.worker_prefix,
                                  runner.Progress())
            db.call(conn, "allocate_ranges", batch_id=batch_id)
            _expect(conn, batch_id, "ALLOCATED")
            log("scaling baseline: processing")
            reports = runner.process_ranges(target, batch_id, 1, run_options.worker_prefix,
                                            runner.Progress())
            row = _status(conn, batch_id)
            if row["ranges_done"] != row["range_count"]:
                problems = (row["error"] or "; ".join(r.error for r in reports if r.error)
                            or "the worker stopped")
                raise RunFailed(f"baseline batch {batch_id} ({row['status']}): "
                                f"{row['ranges_done']} of {row['range_count']} ranges done: "
                                f"{problems}")
            log("scaling baseline: validation")
            runner.prepare_stage(target, batch_id, run_options)
            db.call(conn, "validate_batch", batch_id=batch_id)
            row = _expect(conn, batch_id, "VALIDATED")
        except (MonthendError, KeyboardInterrupt):
            # The baseline is always abandoned; a failed one must not hold the period.
            with contextlib.suppress(MonthendError):
                db.call(conn, "cancel_batch", batch_id=batch_id)
                detail["baseline_status"] = _status(conn, batch_id)["status"]
            raise
        detail["processing_seconds_1_worker"] = _seconds(row["phase_seconds"].get("processing"))
        db.call(conn, "cancel_batch", batch_id=batch_id)
        detail["baseline_status"] = _status(conn, batch_id)["status"]
        log(f"scaling baseline: batch {batch_id} cancelled, its claims released")
        # The next pre-flight claims the same rows into the same partition.
        claims = db.call_one(conn, "claim_partition", period=period)["name"]
        _execute(conn, "bench_vacuum_claims", claims=sql.Identifier("batch", claims))


def _measured_run(target: db.Target, period: str, options: BenchOptions, log: Log,
                  result: dict[str, Any]) -> None:
    """W workers from start to COMMITTED and post-processed."""
    run_options = runner.RunOptions(workers=options.workers, range_size=options.range_size)
    with db.connect(target, application_name="monthend bench") as conn:
        checkpointed = _checkpoint(conn)
        earlier = result["checkpoint_before_passes"]
        result["checkpoint_before_passes"] = checkpointed if earlier is None else (
            checkpointed and earlier)
    # The workers the run will open: those asked, bounded by what the server
    # serves (runner.worker_budget).
    result["workers_opened"] = runner.worker_budget(target, options.workers).granted
    with db.connect(target, application_name="monthend bench") as conn:
        wal_before = db.call_one(conn, "bench_wal")
    started = time.monotonic()
    batch_id = runner.start(target, period, run_options)
    result["batch_id"] = batch_id
    log(f"measured run: batch {batch_id}, {options.workers} worker(s), start to post-processed")
    try:
        runner.drive(target, batch_id, run_options, _progress(log, "measured run"))
    finally:
        # The batch's state is reported whether or not it got through.
        with contextlib.suppress(MonthendError):
            result["batch_status"] = runner.summary(target, batch_id)["status"]
    end_to_end = time.monotonic() - started
    summary = runner.summary(target, batch_id)
    phases = dict(sorted(summary["phase_seconds"].items(),
                         key=lambda item: (PHASE_ORDER.index(item[0])
                                           if item[0] in PHASE_ORDER else len(PHASE_ORDER))))
    result.update(
        batch_status=summary["status"],
        source_rows=summary["source_rows"],
        posted_rows=summary["posted_rows"],
        dead_letter_rows=summary["dead_letter_rows"],
        journal_entries=summary["journal_entries"],
        journal_lines=summary["journal_lines"],
        ranges=summary["ranges"],
        digest=summary["digest"],
        end_to_end_seconds=round(end_to_end, 3),
        source_txns_per_second=_rate(summary["source_rows"], end_to_end),
        journal_entries_per_second=_rate(summary["journal_entries"], end_to_end),
        journal_lines_per_second=_rate(summary["journal_lines"], end_to_end),
        phase_seconds=phases,
        commit_seconds=_seconds(phases.get("commit")),
    )
    with db.connect(target, application_name="monthend bench") as conn:
        ranges = db.call_one(conn, "bench_range_seconds", batch_id=batch_id) or {}
        parallel = db.call_one(conn, "bench_parallel_seconds", batch_id=batch_id) or {}
        piece = db.call_one(conn, "bench_longest_validation_piece", batch_id=batch_id)
        _wal(conn, wal_before, summary["source_rows"], result)
    # The serial share: the part of the run's wall time during which fewer
    # than two of its backends were busy.
    parallel_seconds = float(parallel.get("parallel_seconds") or 0)
    result["parallel_seconds"] = round(parallel_seconds, 3)
    result["serial_seconds"] = round(max(end_to_end - parallel_seconds, 0), 3)
    result["serial_share"] = round(result["serial_seconds"] / end_to_end, 4) if end_to_end else None
    result["validation_longest_piece"] = (
        {"table": piece["stage_table"], "task": piece["task"],
         "seconds": _seconds(piece["seconds"])} if piece else None)
    seal = summary.get("seal_seconds")
    if seal is None:
        seal = ranges.get("seal_seconds")
    if seal is not None:
        result["seal_seconds"] = _seconds(seal)
        range_seconds = float(ranges.get("range_seconds") or 0)
        result["seal_share"] = round(float(seal) / range_seconds, 4) if range_seconds else None
    detail = result["scaling_detail"]
    detail["processing_seconds_workers"] = _seconds(phases.get("processing"))
    one, many = detail.get("processing_seconds_1_worker"), phases.get("processing")
    if one and many:
        result["scaling"] = round(float(one) / float(many), 3)


def _wal(conn: psycopg.Connection, before: dict[str, Any] | None, source_rows: Any,
         result: dict[str, Any]) -> None:
    """The WAL the measured run wrote (the server's, from start to
    post-processed: the bench's cluster is its own), per million source rows:
    one node's WAL write rate is the next ceiling past the cores."""
    if before is None:
        return
    written = db.call_one(conn, "bench_wal_since", lsn=before["lsn"])
    after = db.call_one(conn, "bench_wal")
    wal_bytes = int(written["bytes"]) if written else None
    result["wal_bytes"] = wal_bytes
    if after is not None:
        result["wal_records"] = int(after["wal_records"] - before["wal_records"])
        result["wal_full_page_images"] = int(after["wal_fpi"] - before["wal_fpi"])
    rows = float(source_rows or 0)
    result["wal_bytes_per_million_source_rows"] = (
        round(wal_bytes / rows * 1e6) if wal_bytes is not None and rows else None)


def _raw_write(target: db.Target, batch_id: int, parallel: bool, log: Log,
               result: dict[str, Any]) -> None:
    """Copy the batch's own rows into unindexed logged tables; time the inserts."""
    names = {table: f"{SCRATCH_PREFIX}{table}_{batch_id}" for table in LEDGER_TABLES}
    raw = {table: sql.Identifier("batch", name) for table, name in names.items()}
    detail: dict[str, Any] = {
        "mode": "parallel" if parallel else "sequential",
        "connections": len(LEDGER_TABLES) if parallel else 1,
        "tables": [f"batch.{name}" for name in names.values()],
    }
    result["raw_write"] = detail
    conns: list[psycopg.Connection] = []
    threads: list[threading.Thread] = []
    timings: dict[str, tuple[float, int]] = {}
    errors: list[MonthendError] = []

    def insert(conn: psycopg.Connection, table: str) -> None:
        began = time.monotonic()
        try:
            rows = _execute(conn, "bench_raw_insert", {"batch_id": batch_id},
                            raw=raw[table], ledger=sql.Identifier("gl", table))
        except MonthendError as exc:
            errors.append(exc)
            return
        timings[table] = (time.monotonic() - began, rows)

    try:
        with db.connect(target, application_name="monthend bench") as conn:
            for table in LEDGER_TABLES:
                _execute(conn, "bench_raw_create", raw=raw[table],
                         ledger=sql.Identifier("gl", table))
        for i in range(detail["connections"]):
            conns.append(db.connect(target, application_name=f"monthend bench raw{i + 1}"))
        log(f"raw-write reference: {detail['mode']} INSERT ... SELECT of batch {batch_id}'s "
            f"headers and lines")
        began = time.monotonic()
        if parallel:
            threads = [threading.Thread(target=insert, args=(c, t), daemon=True,
                                        name=f"bench raw {t}")
                       for c, t in zip(conns, LEDGER_TABLES, strict=True)]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        else:
            for table in LEDGER_TABLES:
                insert(conns[0], table)
                if errors:
                    break
        wall = time.monotonic() - began
        if errors:
            raise errors[0]
    finally:
        for conn, thread in zip(conns, threads or [None] * len(conns), strict=True):
            if thread is not None and thread.is_alive():
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe()
                thread.join()
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        with db.connect(target, application_name="monthend bench cleanup") as conn:
            for name in raw.values():
                _execute(conn, "bench_raw_drop", raw=name)
        detail["dropped"] = True
    header_seconds, headers = timings["journal_entry_header"]
    line_seconds, lines = timings["journal_entry_line"]
    detail.update(header_seconds=round(header_seconds, 3), line_seconds=round(line_seconds, 3),
                  headers=headers, lines=lines)
    if (headers, lines) != (result.get("journal_entries"), result.get("journal_lines")):
        raise RunFailed(f"the raw-write copy read {headers} headers and {lines} lines of batch "
                        f"{batch_id}, the batch has {result.get('journal_entries')} and "
                        f"{result.get('journal_lines')}")
    result["raw_write_seconds"] = round(wall, 3)
    if wall > 0 and result.get("end_to_end_seconds"):
        result["ratio"] = round(result["end_to_end_seconds"] / wall, 3)


def _judge(result: dict[str, Any]) -> None:
    targets = {}
    for field, comparison, threshold, label in TARGETS:
        value = result.get(field)
        met = None if value is None else (value >= threshold if comparison == ">="
                                          else value <= threshold)
        targets[field] = {"target": f"{comparison} {threshold:g}", "value": value,
                          "met": met, "measures": label}
    result["targets"] = targets


def run(target: db.Target, options: BenchOptions, log: Log,
        warn: Log | None = None) -> dict[str, Any]:
    """The whole benchmark; raises BenchFailed (with the partial result) on failure.

    ``log`` is told each step, ``warn`` each warning as it arises."""
    scaling = options.scaling and options.workers > 1
    result: dict[str, Any] = {
        "status": "RUNNING", "error": None,
        "period": None, "period_choice": None,
        "txns": options.txns, "bad_rows": options.bad_rows, "seed": options.seed,
        "workers": options.workers, "workers_opened": None, "range_size": options.range_size,
        "settings": None, "durable": None, "warnings": [],
        "generate_seconds": None, "generate": None,
        "batch_id": None, "batch_status": None,
        "source_rows": None, "posted_rows": None, "dead_letter_rows": None,
        "journal_entries": None, "journal_lines": None, "ranges": None, "digest": None,
        "end_to_end_seconds": None, "source_txns_per_second": None,
        "journal_entries_per_second": None, "journal_lines_per_second": None,
        "phase_seconds": None, "commit_seconds": None,
        "parallel_seconds": None, "serial_seconds": None, "serial_share": None,
        "validation_longest_piece": None,
        "wal_bytes": None, "wal_records": None, "wal_full_page_images": None,
        "wal_bytes_per_million_source_rows": None,
        "scaling": None,
        "scaling_detail": {"measured": scaling, "compares": SCALING_COMPARES,
                           "workers": options.workers, "baseline_batch_id": None,
                           "baseline_status": None, "processing_seconds_1_worker": None,
                           "processing_seconds_workers": None},
        "raw_write_seconds": None, "ratio": None, "raw_write": None,
        "checkpoint_before_passes": None,
        "driver_peak_rss_mb": None,
        "period_end": None,
        "policies": options.policies, "book": None,
    }
    if not scaling:
        result["scaling_detail"]["skipped"] = ("--no-scaling" if not options.scaling
                                               else "1 worker: nothing to compare")
    try:
        with _sigterm_unwinds():
            _bench(target, options, scaling, log, warn or log, result)
        result["status"] = "OK"
    except MonthendError as exc:
        result["status"] = "FAILED"
        result["error"] = str(exc)
        result["driver_peak_rss_mb"] = peak_rss_mb()
        _judge(result)
        raise BenchFailed(exc, result) from exc
    result["driver_peak_rss_mb"] = peak_rss_mb()
    _judge(result)
    return result


def _bench(target: db.Target, options: BenchOptions, scaling: bool, log: Log, warn: Log,
           result: dict[str, Any]) -> None:
    with db.connect(target, application_name="monthend bench") as conn:
        settings = server_settings(conn)
        result["settings"] = settings
        result["durable"] = is_durable(settings)
        if not result["durable"]:
            result["warnings"].append(
                f"the server is not durable (fsync={settings['fsync']}, synchronous_commit="
                f"{settings['synchronous_commit']}, wal_level={settings['wal_level']}): commits "
                "do not wait for the disk, so these figures are not comparable with the "
                "targets, which assume durable settings")
            warn(result["warnings"][-1])
        period, choice = choose_period(conn, options.period, options.policies is not None)
        result["period"], result["period_choice"] = period, choice
        log(f"period {period} ({choice}): generating {options.txns:,} source rows")
        began = time.monotonic()
        row = db.generate_transactions(conn, period=period, txns=options.txns,
                                       bad_fraction=Decimal(str(options.bad_rows)),
                                       seed=options.seed)
        result["generate_seconds"] = round(time.monotonic() - began, 3)
        result["generate"] = {"premium_rows": row.get("p_premium_rows"),
                              "claim_rows": row.get("p_claim_rows"),
                              "bad_rows": row.get("p_bad_rows"),
                              "policies": row.get("p_policy_rows"),
                              "seconds": result["generate_seconds"]}
        if options.policies is not None:
            result["book"] = _generate_book(conn, _month(period, -1), options,
                                            int(row.get("p_policy_rows") or 0), log)
        # Both passes then read the rows as a month's loads are read at month end:
        # vacuumed, without hint bits left for the first reader to set.
        db.call(conn, "bench_vacuum_source")
    run_options = runner.RunOptions(workers=options.workers, range_size=options.range_size)
    book = result.get("book")
    if book is not None and book["txns"]:
        _post_book(target, book, run_options, log)
    # An earlier benchmark's period-end of the previous period: its revaluation
    # is reversed first, as the first batch of a period does (not timed).
    _reverse_due(target, period, run_options, log)
    if scaling:
        _baseline(target, period, options, log, result)
    _measured_run(target, period, options, log, result)
    _raw_write(target, result["batch_id"], options.workers >= 2, log, result)
    _period_end(target, period, options, log, result)


def _reverse_due(target: db.Target, period: str, run_options: runner.RunOptions,
                 log: Log) -> None:
    """The automatic reversal into the period, when one is due (not timed)."""
    due = runner.start_auto_reversal(target, period, run_options)
    if due is not None:
        runner.drive(target, due, run_options, _progress(log, "automatic reversal"))


def _generate_book(conn: psycopg.Connection, book_period: str, options: BenchOptions,
                   own_policies: int, log: Log) -> dict[str, Any]:
    """The book: a load of the month before the period whose premium rows write
    the policies the period's own rows do not (none when they write enough)."""
    assert options.policies is not None
    missing = max(options.policies - own_policies, 0)
    book: dict[str, Any] = {"period": book_period, "txns": 0, "premium_rows": 0,
                            "claim_rows": 0, "policies": 0, "batch_id": None,
                            "generate_seconds": None, "run_seconds": None,
                            "policies_written": own_policies}
    if not missing:
        log(f"book: the period's rows write {own_policies:,} policies, "
            f"{options.policies:,} asked; no book")
        return book
    book["txns"] = _book_txns(missing)
    log(f"book: {book['txns']:,} source rows in {book_period} for {missing:,} more policies")
    began = time.monotonic()
    row = db.generate_transactions(conn, period=book_period, txns=book["txns"],
                                   bad_fraction=Decimal(0), seed=options.seed + 1)
    book.update(premium_rows=row.get("p_premium_rows"), claim_rows=row.get("p_claim_rows"),
                policies=row.get("p_policy_rows"),
                generate_seconds=round(time.monotonic() - began, 3))
    book["policies_written"] = own_policies + int(book["policies"] or 0)
    return book


def _post_book(target: db.Target, book: dict[str, Any], run_options: runner.RunOptions,
               log: Log) -> None:
    """The book's load posted by a run of its month, before anything is timed."""
    _reverse_due(target, book["period"], run_options, log)
    began = time.monotonic()
    batch_id = runner.start(target, book["period"], run_options)
    book["batch_id"] = batch_id
    log(f"book: batch {batch_id} posts {book['period']} (not timed)")
    runner.drive(target, batch_id, run_options, _progress(log, "book"))
    book["run_seconds"] = round(time.monotonic() - began, 3)
    status = runner.summary(target, batch_id)["status"]
    if status != "COMMITTED":
        raise RunFailed(f"the book's batch {batch_id} ended {status}, not COMMITTED: finish it "
                        f"with `monthend resume {batch_id}` or abandon it with `monthend cancel "
                        f"{batch_id}`, then run the benchmark again")


def _period_end(target: db.Target, period: str, options: BenchOptions, log: Log,
                result: dict[str, Any]) -> None:
    """The period's period-end batch after its run (UPR of every policy in force,
    FX revaluation at the closing rates the generator gave the period), start
    to post-processed, with the same workers."""
    run_options = runner.RunOptions(workers=options.workers, range_size=options.range_size)
    started = time.monotonic()
    batch_id = runner.start_period_end(target, period, run_options)
    log(f"period-end: batch {batch_id}, {options.workers} worker(s), start to post-processed")
    runner.drive(target, batch_id, run_options, _progress(log, "period-end"))
    seconds = time.monotonic() - started
    summary = runner.summary(target, batch_id)
    with db.connect(target, application_name="monthend bench") as conn:
        counts = db.call_one(conn, "bench_period_end_counts", batch_id=batch_id) or {}
    result["period_end"] = {
        "batch_id": batch_id, "status": summary["status"],
        "seconds": round(seconds, 3),
        "phase_seconds": summary["phase_seconds"],
        "journal_entries": summary["journal_entries"],
        **counts,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render(result: dict[str, Any]) -> Any:
    """The result as one rich table: run, reference and ratio, settings."""
    from rich.table import Table

    targets = result.get("targets") or {}
    table = Table(title=f"monthend bench: {_fmt(result['txns'])} transactions, "
                        f"{result['workers']} worker(s)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")

    def row(label: str, value: Any, field: str | None = None, digits: int = 3) -> None:
        target = targets.get(field) if field else None
        mark = ""
        if target is not None:
            mark = {True: "[green]pass[/]", False: "[red]miss[/]", None: "-"}[target["met"]]
        table.add_row(label, _fmt(value, digits), target["target"] if target else "", mark)

    def section(title: str) -> None:
        table.add_section()
        table.add_row(f"[bold]{title}[/]", "", "", "")

    detail = result.get("scaling_detail") or {}
    raw = result.get("raw_write") or {}
    section("run")
    row("period", result["period"])
    row("  chosen as", result["period_choice"])
    row(f"batch ({result['workers']} workers)",
        f"{_fmt(result['batch_id'])} {result['batch_status'] or ''}")
    if detail.get("measured"):
        row("baseline batch (1 worker)",
            f"{_fmt(detail.get('baseline_batch_id'))} {detail.get('baseline_status') or ''}")
    row("generate seconds (not in end to end)", result["generate_seconds"])
    row("source rows", result["source_rows"])
    row("posted rows", result["posted_rows"])
    row("dead-letter rows", result["dead_letter_rows"])
    row("journal entries", result["journal_entries"])
    row("journal lines", result["journal_lines"])
    row("end to end seconds (start to post-processed)", result["end_to_end_seconds"])
    row("source transactions/s", result["source_txns_per_second"], "source_txns_per_second", 0)
    row("journal entries/s", result["journal_entries_per_second"], digits=0)
    row("journal lines/s", result["journal_lines_per_second"], digits=0)
    phases = result.get("phase_seconds") or {}
    for phase, seconds in phases.items():
        if phase == "commit":
            row("  commit seconds", result["commit_seconds"], "commit_seconds")
        else:
            row(f"  {phase} seconds", float(seconds))
    if "commit" not in phases:
        row("  commit seconds", result["commit_seconds"], "commit_seconds")
    share = result.get("serial_share")
    row("serial seconds (fewer than two backends busy)", result.get("serial_seconds"))
    row("serial share of end to end", None if share is None else f"{share:.1%}", "serial_share")
    if result.get("wal_bytes") is not None:
        row("WAL written, MB", result["wal_bytes"] / 1e6, digits=1)
        row("WAL per million source rows, MB",
            (result["wal_bytes_per_million_source_rows"] or 0) / 1e6, digits=1)
    if "seal_seconds" in result:
        row("seal seconds (summed over ranges)", result["seal_seconds"])
        share = result.get("seal_share")
        row("seal share of range work", None if share is None else f"{share:.1%}")
    if detail.get("measured"):
        row("processing seconds, 1 worker", detail.get("processing_seconds_1_worker"))
        row(f"processing seconds, {result['workers']} workers",
            detail.get("processing_seconds_workers"))
        row("scaling (processing, identical rows)", result["scaling"], "scaling")
    else:
        row(f"scaling (skipped: {detail.get('skipped')})", None, "scaling")
    row("driver peak RSS MB", result["driver_peak_rss_mb"], "driver_peak_rss_mb", 1)

    period_end = result.get("period_end") or {}
    if period_end:
        section("period-end (UPR, FX revaluation)")
        row("batch", f"{_fmt(period_end.get('batch_id'))} {period_end.get('status') or ''}")
        book = result.get("book") or {}
        if book.get("batch_id") is not None:
            row("book (policies written the month before)",
                f"{_fmt(book.get('policies'))} in {book.get('period')}, batch "
                f"{_fmt(book.get('batch_id'))}")
        if book:
            row("policies written by the period's end", book.get("policies_written"))
        row("policies in force at the period's end", period_end.get("policies_in_force"))
        row("  of which with written premium (UPR rows)", period_end.get("policies_with_upr"))
        row("policy ranges, ledger ranges",
            f"{_fmt(period_end.get('policy_ranges'))}, {_fmt(period_end.get('ledger_ranges'))}")
        row("journal entries", period_end.get("journal_entries"))
        row("seconds (start to post-processed)", period_end.get("seconds"))
        for phase, seconds in (period_end.get("phase_seconds") or {}).items():
            row(f"  {phase} seconds", float(seconds))

    section("reference and ratio")
    mode = raw.get("mode")
    row("raw write", f"{mode}, {raw.get('connections')} connection(s)" if mode else None)
    row("  headers copied", raw.get("headers"))
    row("  header insert seconds", raw.get("header_seconds"))
    row("  lines copied", raw.get("lines"))
    row("  line insert seconds", raw.get("line_seconds"))
    row("raw write seconds", result["raw_write_seconds"])
    row("ratio (end to end / raw write)", result["ratio"], "ratio")

    section("settings")
    for name, value in (result.get("settings") or {}).items():
        row("cores (driver host)" if name == "cores" else name, value)
    durable = result.get("durable")
    row("durable", "[red]no[/]" if durable is False else _fmt(durable))
    row("checkpoint before each pass", result.get("checkpoint_before_passes"))
    if result.get("error"):
        table.add_section()
        table.add_row("[red]error[/]", result["error"], "", "")
    return table
