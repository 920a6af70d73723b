"""The ``monthend`` command line. Exit codes: 0 success, 1 the run or a check
failed, 2 bad usage or configuration; the message on stderr says what to do.
Commands a scheduler calls take ``--json`` and print one JSON document on stdout;
its amounts are exact decimal strings (``monthend.jsonout``)."""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from monthend import __version__, archive_check, db, jsonout, migrate, proof, report, runner
from monthend import archive as archive_writer
from monthend import verify as verification
from monthend import watch as auditor_watch
from monthend.display import RunDisplay
from monthend.embedded import EmbeddedCluster
from monthend.errors import ConfigurationError, MonthendError, RunFailed
from monthend.source_ids import read_source_ids

# Set once a command has printed its JSON document: stdout carries exactly one.
_json_emitted = False


def emit_json(document: Any) -> None:
    global _json_emitted
    # Decimals (money) as exact strings, never floats: jsonout is the one policy.
    click.echo(jsonout.dumps(document))
    _json_emitted = True


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map the project's exceptions to exit codes and a message on stderr."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MonthendError as exc:
            as_json = kwargs.get("as_json")
            if as_json and not _json_emitted:
                emit_json({"status": "ERROR", "error": str(exc), "exit_code": exc.exit_code})
            click.echo(f"monthend: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


def _check_period(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise click.BadParameter(f"{value!r} is not a period of the form YYYY-MM, e.g. 2025-01")
    return value


def period_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--period", required=True, callback=_check_period,
                        help="Accounting period, YYYY-MM.")(func)


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout.")


@click.group(invoke_without_command=True)
@click.option("--dsn", envvar="MONTHEND_DSN", default=None,
              help="libpq connection string or URI. Default: DATABASE_URL, then PG* "
                   "variables, then the embedded local cluster.")
@click.option("--version", "show_version", is_flag=True,
              help="Print the package's version and schema version, and the schema version "
                   "of the database when one is configured or running; then exit.")
@click.pass_context
def main(ctx: click.Context, dsn: str | None, show_version: bool) -> None:
    """monthend: the month-end general-ledger posting run, inside PostgreSQL."""
    ctx.obj = db.resolve_target(dsn)
    if show_version:
        click.echo(_version_text(ctx.obj))
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


def _version_text(target: db.Target) -> str:
    """Never starts the embedded cluster: a version is read, not a server started."""
    lines = [f"monthend {__version__}, schema {migrate.shipped_schema_version()}"]
    if target.embedded is not None and not target.embedded.is_running():
        lines.append("database: the embedded cluster is not running")
        return "\n".join(lines)
    try:
        with db.connect(target, connect_timeout=5) as conn:
            applied = migrate.applied_schema_version(conn)
    except MonthendError as exc:
        lines.append(f"database: not reachable ({str(exc).splitlines()[0]})")
    else:
        lines.append(f"database: schema {applied or 'none (run `monthend migrate`)'}; "
                     f"{target.describe()}")
    return "\n".join(lines)


def target_of(ctx: click.Context, announce: bool = True) -> db.Target:
    target: db.Target = ctx.obj
    db.ensure_started(target, announce=announce)
    return target


@main.command("migrate")
@click.option("--dry-run", is_flag=True, help="Print what would be applied; apply nothing.")
@click.option("--show-sql", is_flag=True, help="With --dry-run, print the SQL as well.")
@click.option("--status", "status_only", is_flag=True,
              help="List pending migrations; exit 1 when something is pending.")
@click.option("--with-demo-data-tools", "with_demo_tools", is_flag=True,
              help="Also install the synthetic-data generator that `monthend generate` "
                   "calls (test and demo databases; never needed in production).")
@json_option
@click.pass_context
@handle_errors
def migrate_cmd(ctx: click.Context, dry_run: bool, show_sql: bool, status_only: bool,
                with_demo_tools: bool, as_json: bool) -> None:
    """Apply pending migrations (versioned once, repeatable objects when changed)."""
    target = target_of(ctx)
    with db.connect(target) as conn:
        if dry_run or status_only:
            the_plan = migrate.plan(conn, with_demo_tools=with_demo_tools)
            pending = the_plan.pending
            if as_json:
                emit_json({"pending": migrate.describe(pending)})
            else:
                for mfile in pending:
                    click.echo(f"pending  {mfile.kind:<10} {mfile.name}")
                    if show_sql:
                        click.echo(mfile.text)
                if not pending:
                    click.echo("up to date: nothing pending")
            if status_only and pending:
                sys.exit(1)
            return
        done = migrate.apply(
            conn, progress=None if as_json else
            lambda f: click.echo(f"applying {f.kind:<10} {f.name}", err=True),
            with_demo_tools=with_demo_tools)
    if as_json:
        emit_json({"applied": migrate.describe(done)})
    else:
        click.echo(f"applied {len(done)} migration file(s); {target.describe()}"
                   if done else "up to date: nothing to apply")


@main.command()
@period_option
@click.option("--txns", type=click.IntRange(min=0), required=True,
              help="Number of source transactions.")
@click.option("--bad-rows", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of rows spoiled with every kind of defect pre-flight catches.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Same seed, same rows.")
@json_option
@click.pass_context
@handle_errors
def generate(ctx: click.Context, period: str, txns: int, bad_rows: float, seed: int,
             as_json: bool) -> None:
    """Load synthetic premium and claim transactions for a period."""
    target = target_of(ctx)
    started = time.monotonic()
    with db.connect(target) as conn:
        row = db.generate_transactions(conn, period=period, txns=txns,
                                       bad_fraction=Decimal(str(bad_rows)), seed=seed)
    result = {"period": period, "premium_rows": row["p_premium_rows"],
              "claim_rows": row["p_claim_rows"], "bad_rows": row["p_bad_rows"],
              "policies": row["p_policy_rows"], "seconds": round(time.monotonic() - started, 3)}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"generated {txns} transactions for {period} "
                   f"({result['premium_rows']} premium, {result['claim_rows']} claims, "
                   f"{result['bad_rows']} bad; {result['policies']} policies) "
                   f"in {result['seconds']} s")


def _run_options(workers: int, range_size: int, max_attempts: int,
                 max_connections: int | None = None) -> runner.RunOptions:
    return runner.RunOptions(workers=workers, range_size=range_size, max_attempts=max_attempts,
                             max_connections=max_connections)


max_connections_option = click.option(
    "--max-connections", type=click.IntRange(min=1), default=None,
    help="Open at most this many range workers (default: as many as asked, bounded by the "
         "server's free connections). More workers than the database server's cores only "
         "queue on them: give its core count here.")


def _finish(target: db.Target, batch_id: int, as_json: bool, display: RunDisplay) -> None:
    display.close()
    result = runner.summary(target, batch_id)
    if as_json:
        emit_json(result)
    else:
        click.echo(_summary_text(result))


def _summary_text(result: dict[str, Any]) -> str:
    batch = (f"reversal batch {result['batch_id']} (of batch {result['reverses_batch_id']})"
             if result["kind"] == "REVERSAL"
             else f"automatic reversal {result['batch_id']} (of the FX revaluation of batch "
                  f"{result['reverses_batch_id']})" if result["kind"] == "AUTO_REVERSAL"
             else f"period-end draft {result['batch_id']}"
             if result["kind"] == "PERIOD_END" and result["mode"] == "DRAFT"
             else f"period-end batch {result['batch_id']}" if result["kind"] == "PERIOD_END"
             else f"draft {result['batch_id']}" if result["mode"] == "DRAFT"
             else f"batch {result['batch_id']}")
    if result["posted_rows"] == 0:
        head = (f"{batch} {result['status']}: period {result['period']} had nothing to post")
    elif result["kind"] == "PERIOD_END":
        head = (f"{batch} {result['status']}: {result['posted_rows']} UPR changes and FX "
                f"revaluations booked as {result['journal_entries']} entries / "
                f"{result['journal_lines']} lines")
    elif result["kind"] in ("REVERSAL", "AUTO_REVERSAL"):
        head = (f"{batch} {result['status']}: {result['posted_rows']} rows' postings reversed "
                f"by {result['journal_entries']} entries / {result['journal_lines']} lines")
    elif result["status"] == "SUPERSEDED":
        head = (f"{batch} superseded by a newer draft of {result['period']}: it would have "
                f"posted {result['posted_rows']} rows as {result['journal_entries']} entries; "
                f"nothing of it is or will be in the ledger")
    elif result["status"] == "DRAFT":
        head = (f"{batch} built: {result['posted_rows']} rows would be posted as "
                f"{result['journal_entries']} entries / {result['journal_lines']} lines "
                f"(nothing is in the ledger yet)")
    else:
        head = (f"{batch} {result['status']}: {result['posted_rows']} "
                f"rows posted as {result['journal_entries']} entries / "
                f"{result['journal_lines']} lines")
    lines = [head,
             f"  dead letters: {result['dead_letter_rows']} "
             f"{jsonout.dumps(result['dead_letters_by_reason'], indent=None)}",
             f"  elapsed: {result['elapsed_seconds']:.1f} s "
             f"({result['source_rows_per_second'] or 0:,.0f} source rows/s)",
             "  phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in result["phase_seconds"].items()),
             f"  digest: {result['digest']}"]
    if result["status"] == "DRAFT":
        lines.append(f"  review it (monthend report trial-balance --batch {result['batch_id']}, "
                     f"monthend diff --draft {result['batch_id']} --against PERIOD), then "
                     f"`monthend finalize {result['batch_id']}` or "
                     f"`monthend discard {result['batch_id']}`")
    return "\n".join(lines)


def _drive(ctx: click.Context, batch_id: int, options: runner.RunOptions, as_json: bool) -> None:
    target = ctx.obj
    display = RunDisplay(quiet=as_json)
    try:
        runner.drive(target, batch_id, options, display.hooks())
    except MonthendError as failure:
        display.close()
        if as_json:
            try:
                document = runner.summary(target, batch_id)
            except MonthendError:
                # The database is gone too: the scheduler still gets one
                # document, carrying the run's own error rather than this one.
                document = {"batch_id": batch_id, "status": "UNKNOWN", "error": str(failure)}
            emit_json(document)
        raise
    _finish(target, batch_id, as_json, display)


@main.command()
@period_option
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--range-size", type=click.IntRange(min=1), default=runner.DEFAULT_RANGE_SIZE,
              show_default=True, help="Source rows a range.")
@click.option("--max-attempts", type=click.IntRange(1, 100),
              default=runner.DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Attempts a range gets before the batch fails.")
@click.option("--draft", is_flag=True,
              help="Stop before the commit: a draft to review, then finalize or discard "
                   "(replaces the period's earlier draft).")
@max_connections_option
@json_option
@click.pass_context
@handle_errors
def run(ctx: click.Context, period: str, workers: int, range_size: int, max_attempts: int,
        draft: bool, max_connections: int | None, as_json: bool) -> None:
    """Run the month-end batch of a period, pre-flight to commit (or, a draft, to validation)."""
    target = target_of(ctx)
    options = _run_options(workers, range_size, max_attempts, max_connections)
    options.mode = "DRAFT" if draft else "FINAL"
    if not draft:
        _auto_reversal_first(ctx, period, options, as_json)
    batch_id = runner.start(target, period, options)
    if not as_json:
        click.echo(f"{'draft' if draft else 'batch'} {batch_id} started for {period}", err=True)
    _drive(ctx, batch_id, options, as_json)


def _auto_reversal_first(ctx: click.Context, period: str, options: runner.RunOptions,
                         as_json: bool) -> None:
    """The first batch of a period reverses the previous period's FX revaluation
    first (batch.auto_reversal_due), as a batch of its own. Not for a draft,
    which posts nothing: its start is refused while the reversal is due."""
    target = target_of(ctx, announce=False)
    reversal_options = runner.RunOptions(workers=options.workers, range_size=options.range_size,
                                         max_attempts=options.max_attempts,
                                         max_connections=options.max_connections)
    batch_id = runner.start_auto_reversal(target, period, reversal_options)
    if batch_id is None:
        return
    click.echo(f"automatic reversal {batch_id} started for {period}: the previous period's "
               f"FX revaluation is reversed on its first day", err=True)
    display = RunDisplay(quiet=as_json)
    try:
        runner.drive(target, batch_id, reversal_options, display.hooks())
    finally:
        display.close()
    if not as_json:
        click.echo(_summary_text(runner.summary(target, batch_id)), err=True)


@main.command("period-end")
@period_option
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--range-size", type=click.IntRange(min=1), default=runner.DEFAULT_RANGE_SIZE,
              show_default=True, help="Policies a range.")
@click.option("--max-attempts", type=click.IntRange(1, 100),
              default=runner.DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Attempts a range gets before the batch fails.")
@click.option("--draft", is_flag=True,
              help="Stop before the commit: a draft to review, then finalize or discard.")
@max_connections_option
@json_option
@click.pass_context
@handle_errors
def period_end(ctx: click.Context, period: str, workers: int, range_size: int,
               max_attempts: int, draft: bool, max_connections: int | None,
               as_json: bool) -> None:
    """Post a period's period-end entries: the change in the unearned premium reserve
    (daily pro rata per policy) and the FX revaluation of monetary balances."""
    target = target_of(ctx)
    options = _run_options(workers, range_size, max_attempts, max_connections)
    options.mode = "DRAFT" if draft else "FINAL"
    if not draft:
        _auto_reversal_first(ctx, period, options, as_json)
    batch_id = runner.start_period_end(target, period, options)
    if not as_json:
        click.echo(f"period-end {'draft' if draft else 'batch'} {batch_id} started for {period}",
                   err=True)
    _drive(ctx, batch_id, options, as_json)


@main.command()
@click.argument("draft_id", type=int)
@json_option
@click.pass_context
@handle_errors
def finalize(ctx: click.Context, draft_id: int, as_json: bool) -> None:
    """Post a draft: the commit its run would have made, if nothing it was built from changed."""
    target = target_of(ctx)
    runner.finalize(target, draft_id)
    _drive(ctx, draft_id, runner.RunOptions(), as_json)


@main.command()
@click.argument("draft_id", type=int)
@json_option
@click.pass_context
@handle_errors
def discard(ctx: click.Context, draft_id: int, as_json: bool) -> None:
    """Remove a draft and everything it holds (the audit chain records it)."""
    target = target_of(ctx)
    runner.discard(target, draft_id)
    if as_json:
        emit_json({"batch_id": draft_id, "status": "DISCARDED"})
    else:
        click.echo(f"draft {draft_id} discarded; its rows are unposted as before it was built")


@main.command()
@click.argument("batch_id", type=int)
@click.option("--reason", required=True,
              help="Reversal reason code (gl.reversal_reason): RULE_ERROR, SOURCE_ERROR, "
                   "DUPLICATE, FX_RATE_ERROR, OTHER.")
@click.option("--note", default=None, help="Free text kept with the reversal.")
@click.option("--method", type=click.Choice(["side", "sign"]), default="side",
              show_default=True,
              help="side: debit and credit swap; sign: the amounts are negated.")
@click.option("--period", default=None, callback=_check_period,
              help="Open period to post the reversal in (default: the batch's own).")
@click.option("--source-ids", "source_ids_file", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of source_type,source_id: reverse only these rows' entries.")
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--range-size", type=click.IntRange(min=1), default=runner.DEFAULT_RANGE_SIZE,
              show_default=True, help="Source rows a range.")
@max_connections_option
@json_option
@click.pass_context
@handle_errors
def reverse(ctx: click.Context, batch_id: int, reason: str, note: str | None, method: str,
            period: str | None, source_ids_file: Path | None, workers: int, range_size: int,
            max_connections: int | None, as_json: bool) -> None:
    """Reverse a committed batch (or some of its rows) by a batch of reversing entries;
    the reversed rows can then be posted again by the next run of their period."""
    source_ids = read_source_ids(source_ids_file) if source_ids_file else None
    target = target_of(ctx)
    options = _run_options(workers, range_size, runner.DEFAULT_MAX_ATTEMPTS, max_connections)
    reversal = runner.start_reversal(target, batch_id, reason, note, method, period,
                                     source_ids, options)
    if not as_json:
        click.echo(f"reversal batch {reversal} started: reverses batch {batch_id}", err=True)
    _drive(ctx, reversal, options, as_json)


@main.command()
@click.argument("batch_id", type=int)
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True)
@max_connections_option
@json_option
@click.pass_context
@handle_errors
def resume(ctx: click.Context, batch_id: int, workers: int, max_connections: int | None,
           as_json: bool) -> None:
    """Finish an interrupted or failed batch: only what is missing is run."""
    target_of(ctx)
    _drive(ctx, batch_id, runner.RunOptions(workers=workers, max_connections=max_connections),
           as_json)


@main.command()
@click.argument("batch_id", type=int)
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True)
@max_connections_option
@json_option
@click.pass_context
@handle_errors
def work(ctx: click.Context, batch_id: int, workers: int, max_connections: int | None,
         as_json: bool) -> None:
    """Join a running batch from another host: claim and run its ranges, of
    pre-flight and of processing, until none is left."""
    target = target_of(ctx)
    display = RunDisplay(quiet=as_json)
    reports = runner.join_batch(target, batch_id, workers, runner.RunOptions().worker_prefix,
                                display.hooks(), max_connections)
    display.close()
    result = {"batch_id": batch_id,
              "ranges_processed": sum(r.ranges for r in reports),
              "range_failures": sum(r.failures for r in reports),
              "errors": [r.error for r in reports if r.error]}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"processed {result['ranges_processed']} ranges of batch {batch_id}")
    if result["errors"]:
        raise RunFailed("; ".join(result["errors"]))


@main.command()
@click.argument("batch_id", type=int)
@json_option
@click.pass_context
@handle_errors
def cancel(ctx: click.Context, batch_id: int, as_json: bool) -> None:
    """Abandon an unfinished batch, leaving nothing behind."""
    target = target_of(ctx)
    with db.connect(target) as conn:
        db.call(conn, "cancel_batch", batch_id=batch_id)
    if as_json:
        emit_json({"batch_id": batch_id, "status": "CANCELLED"})
    else:
        click.echo(f"batch {batch_id} cancelled; its rows are unposted again")


@main.command()
@click.argument("batch_id", type=int, required=False)
@json_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, batch_id: int | None, as_json: bool) -> None:
    """State of a batch (default: the latest)."""
    target = target_of(ctx)
    with db.connect(target) as conn:
        if batch_id is None:
            latest = db.call_one(conn, "latest_batch", period=None)
            if latest is None:
                raise ConfigurationError("no batch has been run yet; start one with "
                                         "`monthend run --period YYYY-MM`.")
            batch_id = latest["batch_id"]
        checks = db.call(conn, "validation_results", batch_id=batch_id)
        kpi = db.call_one(conn, "batch_kpi", batch_id=batch_id)
    result = runner.summary(target, batch_id)
    result["checks"] = checks
    result["kpi"] = kpi["kpi"] if kpi else None
    if as_json:
        emit_json(result)
    else:
        click.echo(_summary_text(result))
        if result["kpi"]:
            click.echo(_kpi_text(result["kpi"]))
        for check in checks:
            click.echo(f"  {check['status']:<4} {check['phase']:<10} {check['check_name']:<24} "
                       f"{check['actual'] or ''}")
    if result["status"] == "FAILED":
        sys.exit(1)


@main.group()
def dlq() -> None:
    """The dead-letter queue: source rows that could not be posted."""


@dlq.command("list")
@click.option("--batch", "batch_id", type=int, default=None, help="Only this batch's.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_context
@handle_errors
def dlq_list(ctx: click.Context, batch_id: int | None, limit: int, as_json: bool) -> None:
    """Open dead letters with their reason; fix the cause and the next run takes them."""
    target = target_of(ctx)
    with db.connect(target) as conn:
        summary_rows = db.call(conn, "dead_letter_summary", batch_id=batch_id)
        rows = db.call(conn, "dead_letter_list", batch_id=batch_id, limit=limit)
    if as_json:
        emit_json({"by_reason": summary_rows, "rows": rows})
        return
    for row in summary_rows:
        click.echo(f"{row['reason_code']:<26} {row['rows']:>8}")
    for row in rows:
        click.echo(f"{row['source_type']:<8} {row['source_id']:>12} batch {row['batch_id']:<6} "
                   f"{row['reason_code']:<26} {row['detail']}")


@main.command()
@click.option("--batch", "batch_id", type=int, default=None,
              help="Verify this batch's seal, the chain and the ledger.")
@click.option("--full", is_flag=True,
              help="Everything: the chain, the ledger, every batch and closed period (the "
                   "default without --since-head or --batch).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sessions verifying in parallel, all in one exported snapshot.")
@click.option("--since-head", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Verify only what is new after the head kept in this file (chain rows, "
                   "batches and periods sealed after it); the file is replaced with the new "
                   "head when all is well.")
@click.option("--head-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A chain head kept outside the database (JSON: seq, hash). If the file "
                   "exists, that head must still be in the chain; when verification passes "
                   "the file is replaced with the current head.")
@click.option("--from-head", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --to-head: check that the chain leads from this kept head to that "
                   "one (reads only the chain rows between them).")
@click.option("--to-head", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The later kept head, for --from-head.")
@click.option("--watch", is_flag=True,
              help="Verify incrementally since --head-file every --interval seconds, for "
                   "ever, exporting Prometheus gauges (--port or --textfile); writes nothing "
                   "but the head file.")
@click.option("--interval", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds between two verifications under --watch.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Under --watch, stop after this many verifications (default: never).")
@click.option("--port", type=click.IntRange(min=1, max=65535), default=None,
              help="Under --watch, serve the gauges over HTTP on this port.")
@click.option("--address", default="0.0.0.0", show_default=True,
              help="Under --watch --port, the address to listen on.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Under --watch, write the gauges to this file (node_exporter's textfile "
                   "collector), replaced atomically.")
@click.option("--no-record", is_flag=True,
              help="Do not record the run in the audit chain (e.g. on a read-only standby).")
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Verify the archive of a period in this directory, with no database: "
                   "every file's sha256, every range and batch root, the period's seal, the "
                   "archived chain (and --head-file, when at or before its end).")
@json_option
@click.pass_context
@handle_errors
def verify(ctx: click.Context, batch_id: int | None, full: bool, jobs: int,
           since_head: Path | None, head_file: Path | None, from_head: Path | None,
           to_head: Path | None, watch: bool, interval: float, count: int | None,
           port: int | None, address: str, textfile: Path | None, no_record: bool,
           archive_dir: Path | None, as_json: bool) -> None:
    """Run the audit verification functions; exit 1 on any problem."""
    if (from_head is None) != (to_head is None):
        raise ConfigurationError("--from-head and --to-head go together: the two kept heads "
                                 "to check the chain between.")
    if sum(x for x in (full, batch_id is not None, since_head is not None, watch,
                       from_head is not None, archive_dir is not None)) > 1:
        raise ConfigurationError("choose one of --full, --batch, --since-head, --watch, "
                                 "--archive and --from-head/--to-head.")
    if archive_dir is not None:
        kept = verification.read_head_file(head_file) if head_file else None
        if head_file and kept is None:
            raise ConfigurationError(f"--head-file {head_file} does not exist.")
        checked = archive_check.verify_archive(archive_dir, kept)
        if as_json:
            emit_json(checked)
        else:
            click.echo(archive_check.text(checked))
        if not checked["ok"]:
            sys.exit(1)
        return
    if not watch and (port is not None or textfile is not None or count is not None):
        raise ConfigurationError("--port, --textfile and --count go with --watch.")
    target = target_of(ctx)
    if from_head is not None:
        assert to_head is not None
        result = verification.between_heads(target, from_head, to_head)
        if as_json:
            emit_json(result)
        else:
            click.echo(verification.between_heads_text(result))
        if not result["ok"]:
            sys.exit(1)
        return
    if watch:
        if head_file is None:
            raise ConfigurationError("--watch verifies since the head kept in --head-file: give "
                                     "one (keep a first one with `monthend verify --full "
                                     "--head-file FILE`).")
        if port is None and textfile is None:
            raise ConfigurationError("--watch exports its gauges: give --port or --textfile.")
        last = auditor_watch.watch(target, head_file, interval, count=count, port=port,
                                   address=address, textfile=textfile, jobs=jobs,
                                   report=None if as_json else click.echo)
        if as_json:
            emit_json(last)
        if last is None or not last["ok"]:
            sys.exit(1)
        return
    result = verification.verify(target, batch_id, head_file, record_run=not no_record,
                                 since_head=since_head, jobs=jobs)
    if as_json:
        emit_json(result)
    else:
        click.echo(verification.text(result))
    if result["record_error"]:
        click.echo(f"monthend: verification not recorded in the audit chain: "
                   f"{result['record_error']}", err=True)
    if not result["ok"]:
        sys.exit(1)


@main.command()
@click.argument("je_number")
@json_option
@click.pass_context
@handle_errors
def prove(ctx: click.Context, je_number: str, as_json: bool) -> None:
    """The inclusion proof of one journal entry in its sealed batch (seal version 2).

    With --json, one object an auditor checks with `monthend check-proof`, with
    no database."""
    document = proof.fetch(target_of(ctx), je_number)
    if as_json:
        emit_json(document)
    else:
        click.echo(proof.text(document))


@main.command("check-proof")
@click.argument("proof_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--head-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A chain head you kept (monthend verify --head-file): the sealing row must "
                   "be at or before it.")
@json_option
@handle_errors
def check_proof(proof_file: Path, head_file: Path | None, as_json: bool) -> None:
    """Check a proof from `monthend prove --json`, with no database; exit 1 if it fails.

    Recomputes the leaf hash, the range root along the range path, the batch
    root along the batch path, and compares each with the proof's; with a kept
    head, also that the sealing audit row is at or before it."""
    kept = None
    if head_file is not None:
        kept = verification.read_head_file(head_file)
        if kept is None:
            raise ConfigurationError(f"--head-file {head_file} does not exist.")
    checked = proof.result(proof.read_proof_file(proof_file), kept)
    if as_json:
        emit_json(checked)
    else:
        for step in checked["steps"]:
            click.echo(f"{'ok  ' if step['ok'] else 'FAIL'} {step['step']}: {step['detail']}")
        click.echo(f"proof of {checked['je_number']} holds" if checked["ok"] else
                   f"proof of {checked['je_number']} FAILS at step {checked['failed_step']}")
    if not checked["ok"]:
        sys.exit(1)


def _kpi_text(kpi: dict[str, Any]) -> str:
    def pct(value: Any) -> str:
        return "-" if value is None else f"{float(value):.0f}%"

    window = "within" if kpi["within_target_window"] else (
        "over; within the hard window" if kpi["within_hard_window"] else "OVER THE HARD WINDOW")
    return (f"  kpi: {float(kpi['total_seconds']):.1f} s = "
            f"{pct(kpi['percent_of_target_window'])} of the "
            f"{float(kpi['target_window_seconds']) / 60:g} min target window ({window}); "
            f"{float(kpi['source_rows_per_second'] or 0):,.0f} source rows/s = "
            f"{pct(kpi['percent_of_target_throughput'])} of target; "
            f"{float(kpi['worker_rows_per_second'] or 0):,.0f} rows/s a worker = "
            f"{pct(kpi['worker_efficiency_percent'])} of target; "
            f"{kpi['ranges_failed']} ranges failed, {kpi['ranges_retried']} retried; "
            f"dead letters {kpi['dead_letter_rate_percent'] or 0}%")


# Observability: live dashboard, Prometheus metrics, database health, tuning.

@main.command()
@click.argument("batch_id", type=int, required=False)
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
@json_option
@click.pass_context
@handle_errors
def watch(ctx: click.Context, batch_id: int | None, interval: float, once: bool,
          as_json: bool) -> None:
    """Live dashboard of a batch (default: follow the latest), read from the database."""
    from rich.console import Console

    from monthend import dashboard

    target = target_of(ctx, announce=False)
    if once or as_json:
        with db.connect(target, application_name="monthend watch") as conn:
            data = dashboard.fetch(conn, batch_id)
        if as_json:
            emit_json(data)
        else:
            console = Console()
            console.print(dashboard.render(data, console.width, console.height))
        return
    dashboard.watch(target, batch_id, interval)


@main.command()
@click.option("--batch", "batch_id", type=int, default=None,
              help="Export this batch (default: the latest, followed as new ones start).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Serve /metrics on this port until interrupted.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="With --port: the address to listen on (0.0.0.0 for every interface).")
@click.option("--textfile", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the metrics to this file (node_exporter textfile collector) and exit.")
@click.pass_context
@handle_errors
def metrics(ctx: click.Context, batch_id: int | None, port: int | None, address: str,
            textfile: str | None) -> None:
    """Prometheus metrics of the batch and the database (stdout by default)."""
    from monthend import metrics as exporter

    if port is not None and textfile is not None:
        raise click.UsageError("--port and --textfile exclude each other.")
    target = target_of(ctx, announce=False)
    if textfile is not None:
        exporter.write_textfile(target, textfile, batch_id)
    elif port is not None:
        click.echo(f"serving http://{address}:{port}/metrics; Ctrl-C stops", err=True)
        exporter.serve(target, address, port, batch_id)
    else:
        click.echo(exporter.exposition(target, batch_id), nl=False)


@main.command()
@json_option
@click.pass_context
@handle_errors
def health(ctx: click.Context, as_json: bool) -> None:
    """Database health, 0-100, with the reasons; exit 1 when a check is CRITICAL."""
    from monthend import health as health_report

    result = health_report.report(target_of(ctx, announce=False))
    if as_json:
        emit_json(result)
    else:
        click.echo(health_report.text(result))
    if result["status"] == "CRITICAL":
        sys.exit(1)


@main.command()
@click.option("--ram", required=True, help="The server's memory, e.g. 256GB.")
@click.option("--cores", type=click.IntRange(1, 1024), required=True,
              help="The server's CPU cores.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Range workers the run will use (default: one per core).")
@click.option("--storage", type=click.Choice(["ssd", "hdd"]), default="ssd", show_default=True)
@click.option("--day-connections", type=click.IntRange(1, 10000), default=200,
              show_default=True, help="max_connections outside the window (--restore).")
@click.option("--restore", is_flag=True, help="The settings to restore after the window.")
@json_option
@handle_errors
def tune(ram: str, cores: int, workers: int | None, storage: str, day_connections: int,
         restore: bool, as_json: bool) -> None:
    """postgresql.conf fragment for the batch window, sized from the machine."""
    from monthend import tune as tuning

    machine = tuning.Machine(ram=tuning.parse_size(ram), cores=cores,
                             workers=workers or cores, storage=storage,
                             day_connections=day_connections)
    if as_json:
        values = tuning.settings(machine)
        emit_json({"ram_bytes": machine.ram, "cores": cores, "workers": machine.workers,
                   "window": values["window"], "restore": values["restore"],
                   "server_environment": tuning.SERVER_MALLOC_ENVIRONMENT})
    else:
        click.echo(tuning.render(machine, restore=restore), nl=False)


def _bench_period(_ctx: click.Context, _param: click.Parameter,
                  value: str | None) -> str | None:
    import re

    if value is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise click.BadParameter(f"{value!r} is not a period of the form YYYY-MM, e.g. 2040-01")
    return value


@main.command()
@click.option("--txns", type=click.IntRange(min=1), required=True,
              help="Source transactions to generate and post.")
@click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Workers of the measured run.")
@click.option("--period", callback=_bench_period, default=None,
              help="A fresh period (no source rows, batch or ledger partition). "
                   "Default: the first free one from 2040-01.")
@click.option("--bad-rows", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of generated rows spoiled (dead-lettered by pre-flight).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--range-size", type=click.IntRange(min=1), default=runner.DEFAULT_RANGE_SIZE,
              show_default=True, help="Source rows a range.")
@click.option("--no-scaling", is_flag=True,
              help="Skip the 1-worker pass (no scaling figure).")
@click.option("--policies", type=click.IntRange(min=1), default=None,
              help="Policies written by the period's end, for its period-end: those the "
                   "period's premium rows do not write are written the month before, by a "
                   "load posted before anything is timed. Default: only the period's own.")
@json_option
@click.pass_context
@handle_errors
def bench(ctx: click.Context, txns: int, workers: int, period: str | None, bad_rows: float,
          seed: int, range_size: int, no_scaling: bool, policies: int | None,
          as_json: bool) -> None:
    """The benchmark: generate, run, and compare with the machine's raw write speed.

    Exit 0 when the run committed (targets missed or not), 1 when it failed."""
    from rich.console import Console

    from monthend import bench as benchmark

    target = target_of(ctx)
    stderr = Console(stderr=True, highlight=False, soft_wrap=True)

    def log(message: str) -> None:
        if not as_json:
            stderr.print(f"{time.strftime('%H:%M:%S')} {message}", markup=False)

    def warn(message: str) -> None:
        stderr.print(f"monthend: warning: {message}", style="bold yellow", markup=False)

    options = benchmark.BenchOptions(txns=txns, workers=workers, period=period,
                                     bad_rows=bad_rows, seed=seed, range_size=range_size,
                                     scaling=not no_scaling, policies=policies)

    def show(result: dict[str, Any]) -> None:
        if as_json:
            emit_json(result)
            return
        console = Console()
        # Logs and pipes get the full table, not a squeezed 80 columns.
        if not console.is_terminal:
            console = Console(width=110)
        console.print(benchmark.render(result))

    try:
        result = benchmark.run(target, options, log, warn)
    except benchmark.BenchFailed as exc:
        # A table only once something was measured; a usage error is its message.
        if as_json or exc.result["generate"] is not None:
            show(exc.result)
        raise
    show(result)


@main.group("db")
def db_group() -> None:
    """The embedded local PostgreSQL cluster."""


@db_group.command("start")
def db_start() -> None:
    """Initialize (if needed) and start the embedded cluster."""
    cluster = EmbeddedCluster.default()
    try:
        cluster.start()
        cluster.ensure_database()
    except MonthendError as exc:
        click.echo(f"monthend: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"embedded cluster running: {cluster.data_dir}, dsn '{cluster.dsn()}'")


@db_group.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    cluster = EmbeddedCluster.default()
    try:
        stopped = cluster.stop()
    except MonthendError as exc:
        click.echo(f"monthend: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo("embedded cluster stopped" if stopped else "embedded cluster was not running")


def _threshold(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Decimal | None:
    try:
        amount = None if value is None else Decimal(value)
    except ArithmeticError:
        amount = Decimal("NaN")
    if amount is not None and not amount.is_finite():
        raise click.BadParameter(f"{value!r} is not an amount, e.g. 10000")
    return amount


@main.command("report")
@click.argument("name", type=click.Choice(report.NAMES))
@click.option("--period", default=None, callback=_check_period,
              help="The period (YYYY-MM); with --batch, that batch's own (the default).")
@click.option("--batch", "batch_id", type=int, default=None,
              help="large-transactions, high-value, trial-balance: one batch only, a draft "
                   "read from its staging tables before it is finalized.")
@click.option("--threshold", callback=_threshold, default=None,
              help="large-transactions and high-value: the threshold in functional currency "
                   "(default 10000 and 50000).")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV on stdout.")
@click.pass_context
@handle_errors
def report_cmd(ctx: click.Context, name: str, period: str | None, batch_id: int | None,
               threshold: Decimal | None, as_json: bool, as_csv: bool) -> None:
    """Compliance report of a period, read only: large-transactions, high-value,
    trial-balance, integrity, reversals; of its period-end: upr (written, earned
    premium and the UPR), fx-revaluation. Exit 1 when its checks fail."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other.")

    def output_started() -> None:
        global _json_emitted
        _json_emitted = True

    fmt = "json" if as_json else "csv" if as_csv else "table"
    if not report.run(target_of(ctx), name, period, fmt, threshold,
                      on_output=output_started, batch_id=batch_id):
        sys.exit(1)


@main.command("diff")
@click.option("--draft", "batch_id", type=int, required=True,
              help="The draft (or any committed batch) to compare.")
@click.option("--against", "against_period", default=None, callback=_check_period,
              help="What a period posted (every committed batch of it), e.g. last month.")
@click.option("--against-batch", "against_batch_id", type=int, default=None,
              help="A committed batch.")
@click.option("--against-draft", "against_draft_id", type=int, default=None,
              help="Another draft (of the same period: what a rule change would do).")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV on stdout.")
@click.pass_context
@handle_errors
def diff_cmd(ctx: click.Context, batch_id: int, against_period: str | None,
             against_batch_id: int | None, against_draft_id: int | None, as_json: bool,
             as_csv: bool) -> None:
    """Compare a draft's accounting with a period's, a batch's or another draft's, per
    account and currency, in transaction and functional amounts, largest change first."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other.")
    given = [x for x in (against_period, against_batch_id, against_draft_id) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give one of --against PERIOD, --against-batch N, "
                               "--against-draft N.")

    def output_started() -> None:
        global _json_emitted
        _json_emitted = True

    fmt = "json" if as_json else "csv" if as_csv else "table"
    report.diff(target_of(ctx), batch_id, against_period,
                against_batch_id if against_batch_id is not None else against_draft_id,
                fmt, on_output=output_started)


# Period lifecycle: FUTURE -> OPEN -> CLOSED (-> reopened) -> PERMANENTLY_CLOSED.
# Each command is one call of a procedure (procedures/*_period.sql); the
# database enforces the rules and says what to do when it refuses.

period_argument = click.argument("period", callback=_check_period)
reason_option = click.option("--reason", default=None,
                             help="Why: recorded with the transition in the audit chain.")


@main.group("period")
def period_group() -> None:
    """The accounting periods: list, open, close, reopen, lock."""


def _period_row(conn: Any, period: str) -> dict[str, Any]:
    row = db.call_one(conn, "period_summary", period=period)
    if row is None:  # pragma: no cover - the procedure just wrote it
        raise ConfigurationError(f"period {period} has no row in gl.accounting_period")
    return row


def _period_text(row: dict[str, Any]) -> str:
    seal = f", seal {row['seal_digest']}" if row["seal_digest"] else ""
    return (f"period {row['period']} is {row['status']}: {row['je_numbers_used']} numbers "
            f"used, {row['batches_committed']} batch(es) committed, "
            f"{row['open_dead_letters']} open dead letter(s){seal}")


@period_group.command("list")
@json_option
@click.pass_context
@handle_errors
def period_list(ctx: click.Context, as_json: bool) -> None:
    """Every period: status, numbers used, batches, open dead letters, seal."""
    with db.connect(target_of(ctx)) as conn:
        rows = db.call(conn, "period_list")
    if as_json:
        emit_json({"periods": rows})
        return
    click.echo(f"{'period':<8} {'status':<18} {'numbers':>10} {'batches':>7} {'active':>6} "
               f"{'dead':>6} {'fx':>3}  seal")
    for row in rows:
        click.echo(f"{row['period']:<8} {row['status']:<18} {row['je_numbers_used']:>10} "
                   f"{row['batches_committed']:>7} {row['batches_active']:>6} "
                   f"{row['open_dead_letters']:>6} {row['fx_rates']:>3}  "
                   f"{(row['seal_digest'] or '-')[:16]}")


@period_group.command("open")
@period_argument
@reason_option
@json_option
@click.pass_context
@handle_errors
def period_open(ctx: click.Context, period: str, reason: str | None, as_json: bool) -> None:
    """Open a FUTURE period (or create it) for posting."""
    with db.connect(target_of(ctx)) as conn:
        db.call(conn, "period_open", period=period, reason=reason)
        row = _period_row(conn, period)
    if as_json:
        emit_json(row)
        return
    click.echo(_period_text(row))
    if not row["fx_rates"]:
        click.echo(f"monthend: period {period} has no FX rates in gl.fx_rate yet: rows in "
                   "currencies other than the functional one are dead-lettered FX_RATE_MISSING "
                   "until they are added", err=True)


@period_group.command("close")
@period_argument
@click.option("--carry-dead-letters", is_flag=True,
              help="Close although rows dated in the period have open dead letters; how "
                   "many and how much is recorded.")
@reason_option
@json_option
@click.pass_context
@handle_errors
def period_close(ctx: click.Context, period: str, carry_dead_letters: bool, reason: str | None,
                 as_json: bool) -> None:
    """Check a period, write its balances and seal it. Exit 2 when it is not ready
    (the message says what to do), 1 when its ledger fails a check."""
    target = target_of(ctx)
    with db.connect(target) as conn:
        try:
            db.call(conn, "period_close", period=period, carry_dead_letters=carry_dead_letters,
                    reason=reason)
        except MonthendError as refused:
            if as_json:
                try:
                    checks: list[dict[str, Any]] | None = db.call(
                        conn, "period_close_checks", period=period,
                        carry_dead_letters=carry_dead_letters)
                except MonthendError:
                    checks = None
                emit_json({"status": "ERROR", "error": str(refused),
                           "exit_code": refused.exit_code, "period": period, "checks": checks})
            raise
        row = _period_row(conn, period)
        row["checks"] = db.call(conn, "period_recorded_checks", period=period)
        row["batches"] = db.call(conn, "period_seal_batches", period=period)
    if as_json:
        emit_json(row)
        return
    click.echo(_period_text(row))
    click.echo(f"  {row['balance_rows']} balance row(s), {len(row['batches'])} batch(es) sealed")
    for check in row["checks"]:
        click.echo(f"  {check['status']:<4} {check['check_name']:<24} {check['actual'] or ''}")


@period_group.command("reopen")
@period_argument
@click.option("--reason", required=True,
              help="Why the closed period is reopened: recorded in the audit chain.")
@json_option
@click.pass_context
@handle_errors
def period_reopen(ctx: click.Context, period: str, reason: str, as_json: bool) -> None:
    """Reopen the latest CLOSED period; its balances are discarded, its old seal
    stays in the audit chain."""
    with db.connect(target_of(ctx)) as conn:
        db.call(conn, "period_reopen", period=period, reason=reason)
        row = _period_row(conn, period)
    if as_json:
        emit_json(row)
        return
    click.echo(_period_text(row))
    click.echo(f"  balances discarded; seal "
               f"{row['status_detail'].get('discarded_seal_digest')} stays in the audit chain")


@period_group.command("lock")
@period_argument
@reason_option
@json_option
@click.pass_context
@handle_errors
def period_lock(ctx: click.Context, period: str, reason: str | None, as_json: bool) -> None:
    """Close a CLOSED period permanently: nothing changes it afterwards."""
    with db.connect(target_of(ctx)) as conn:
        db.call(conn, "period_lock", period=period, reason=reason)
        row = _period_row(conn, period)
    if as_json:
        emit_json(row)
    else:
        click.echo(_period_text(row))


# The ledger's partitions: list them and make the coming months' ahead of time.

def _megabytes(size: int) -> str:
    return f"{size / 1048576:,.1f} MB"


@main.group("partitions", invoke_without_command=True)
@json_option
@click.pass_context
@handle_errors
def partitions_group(ctx: click.Context, as_json: bool) -> None:
    """The ledger's monthly partitions and the batches under them (`partitions ensure`
    makes the coming months')."""
    if ctx.invoked_subcommand is not None:
        return
    with db.connect(target_of(ctx)) as conn:
        rows = db.call(conn, "ledger_partitions")
        premade = db.call_one(conn, "premade_months")
    assert premade is not None
    if as_json:
        emit_json({"partitions": rows, "premade": premade})
        return
    click.echo(f"{'period':<8} {'status':<18} {'table':<22} {'batch':>6} {'rows':>12} "
               f"{'size':>12}  location")
    for row in rows:
        batch = "-" if row["batch_id"] is None else str(row["batch_id"])
        click.echo(f"{row['period']:<8} {row['period_status'] or '-':<18} "
                   f"{row['ledger_table']:<22} {batch:>6} {row['rows']:>12,} "
                   f"{_megabytes(row['bytes']):>12}  {row['location']}"
                   + (f" {row['archive']}" if row["archive"] else ""))
    click.echo(f"{premade['months']} month(s) made ahead of {premade['base_period']}"
               + ("" if premade["months"] >= 1 else
                  ": run `monthend partitions ensure --ahead 3` before the next run"))


@partitions_group.command("ensure")
@click.option("--ahead", type=click.IntRange(0, 120), default=3, show_default=True,
              help="Months to make after the latest open period (after this month when none "
                   "is open).")
@json_option
@click.pass_context
@handle_errors
def partitions_ensure(ctx: click.Context, ahead: int, as_json: bool) -> None:
    """Make the ledger partitions of every open period and of the months after it."""
    with db.connect(target_of(ctx)) as conn:
        created = [r["name"] for r in db.call(conn, "ensure_partitions_ahead", months=ahead)]
        premade = db.call_one(conn, "premade_months")
    assert premade is not None
    if as_json:
        emit_json({"created": created, "premade": premade})
        return
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"{premade['months']} month(s) made ahead of {premade['base_period']}")


@main.command("archive")
@click.option("--period", default=None, help="The permanently closed period to archive (YYYY-MM).")
@click.option("--due", is_flag=True,
              help="Archive every permanently closed period that ended more than "
                   "gl.setting.retention_months ago, each to --to DIR/<period>.")
@click.option("--to", "directory", type=click.Path(file_okay=False, path_type=Path),
              required=True,
              help="The directory to write the archive to (with --due: under which each "
                   "period gets a directory of its own).")
@click.option("--reason", default=None, help="Why, for the audit chain.")
@click.option("--compress-level", type=click.IntRange(1, 9),
              default=archive_writer.COMPRESS_LEVEL, show_default=True,
              help="gzip level of the files.")
@json_option
@click.pass_context
@handle_errors
def archive_command(ctx: click.Context, period: str | None, due: bool, directory: Path,
                    reason: str | None, compress_level: int, as_json: bool) -> None:
    """Write a permanently closed period to files that verify without the database,
    verify them, then drop its partitions (the period becomes ARCHIVED)."""
    if (period is None) == (not due):
        raise ConfigurationError("give --period P or --due.")
    note = _stderr_note(as_json)
    target = target_of(ctx)
    if due:
        result = archive_writer.archive_due(target, directory, note=note)
        if as_json:
            emit_json(result)
            return
        for one in result["archived"]:
            click.echo(archive_writer.text(one))
        click.echo(f"{len(result['archived'])} period(s) archived (retention "
                   f"{result['retention_months']} months)")
        return
    assert period is not None
    result = archive_writer.archive(target, period, directory, reason=reason,
                                    level=compress_level, note=note)
    if as_json:
        emit_json(result)
    else:
        click.echo(archive_writer.text(result))


@main.command("restore")
@click.option("--from", "directory", type=click.Path(file_okay=False, exists=True,
                                                     path_type=Path), required=True,
              help="The directory of the period's archive.")
@click.option("--reason", default=None, help="Why, for the audit chain.")
@json_option
@click.pass_context
@handle_errors
def restore_command(ctx: click.Context, directory: Path, reason: str | None,
                    as_json: bool) -> None:
    """Verify an archive, then bring its period back as read-only partitions (RESTORED)."""
    result = archive_writer.restore(target_of(ctx), directory, reason=reason,
                                    note=_stderr_note(as_json))
    if as_json:
        emit_json(result)
    else:
        click.echo(archive_writer.text(result))


def _stderr_note(as_json: bool) -> Callable[[str], None]:
    """Progress notes on stderr (stdout stays one JSON document under --json)."""
    del as_json

    def note(message: str) -> None:
        click.echo(f"monthend: {message}", err=True)
    return note


if __name__ == "__main__":
    main()
