"""The live dashboard of a batch (``monthend watch``, and ``monthend run`` on a terminal).

Every number comes from one call of ``batch.dashboard(batch_id)`` in the database,
so the dashboard works from any host that reaches the database, after the
driver died, and with a read-only role. ``render`` turns that document into one
rich renderable that fits the given width and height: when the terminal is
small, the less urgent sections (events, checks, database, latency) go first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from monthend import db
from monthend.errors import ConfigurationError, MonthendError

DEFAULT_INTERVAL = 2.0
LABEL_WIDTH = 10
SEVERITY_STYLE = {"CRITICAL": "bold red", "WARNING": "yellow", "ERROR": "bold red",
                  "INFO": "dim"}
STATUS_STYLE = {"COMMITTED": "bold green", "FAILED": "bold red", "CANCELLED": "magenta"}


class NoSuchBatch(ConfigurationError):
    """The batch asked for does not exist (or no batch has been run)."""


def fetch(conn: psycopg.Connection, batch_id: int | None) -> dict[str, Any]:
    """The dashboard document of a batch (default: the latest batch)."""
    if batch_id is None:
        latest = db.call_one(conn, "latest_batch", period=None)
        if latest is None:
            raise NoSuchBatch("no batch has been run yet; start one with "
                              "`monthend run --period YYYY-MM`.")
        batch_id = latest["batch_id"]
    row = db.call_one(conn, "dashboard", batch_id=batch_id)
    if row is None or row["dashboard"] is None:
        raise NoSuchBatch(f"batch {batch_id} does not exist; `monthend status` shows "
                          "the latest.")
    return row["dashboard"]


# ---------------------------------------------------------------- formatting

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(float(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{float(value):,.0f}/s"


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{float(value):,.{digits}f}"


def measure(value: float | None, unit: str) -> str:
    """An alert's value with its unit: 3,500 rows/s, 0.11%, 6 ranges."""
    if value is None:
        return "-"
    value = float(value)
    shown = f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"
    return f"{shown}{unit}" if unit == "%" else f"{shown} {unit}"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def _clock(iso: str | None) -> str:
    if not iso:
        return "--:--:--"
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
    return iso[11:19]


def _bar(percent: float | None, width: int) -> Text:
    pct = max(0.0, min(100.0, float(percent or 0)))
    filled = round(pct / 100 * width)
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), "grey37"))


def _alert_of(data: dict[str, Any], name: str) -> str | None:
    for alert in data.get("alerts") or []:
        if alert["alert"] == name:
            return alert["severity"]
    return None


def _style_for(severity: str | None) -> str:
    return {"CRITICAL": "bold red", "WARNING": "yellow"}.get(severity or "", "green")


# ---------------------------------------------------------------- sections

def _progress_line(data: dict[str, Any], width: int) -> Text:
    m = data["metrics"]
    tail = f" {number(m['percent_done'], 1)}%  {number(m['rows_done'])}/{number(m['rows_total'])}"
    bar_width = max(8, min(40, width - len(tail) - 1))
    return _bar(m["percent_done"], bar_width) + Text(tail)


def _time_line(data: dict[str, Any]) -> Text:
    m = data["metrics"]
    text = Text(f"elapsed {duration(m['elapsed_seconds'])}")
    eta = m["eta_seconds"]
    if eta is not None and m["phase"] == "processing":
        finish = datetime.fromisoformat(data["generated_at"]).timestamp() + float(eta)
        text.append(f" · ETA {duration(eta)} ({time.strftime('%H:%M:%S', time.localtime(finish))})")
    elif eta is None and m["status"] in ("STARTED", "PREFLIGHTING", "PREFLIGHTED", "ALLOCATED"):
        text.append(" · ETA after the first ranges")
    if m["projected_seconds"] is not None and m["phase"] == "processing":
        text.append(" · projected ")
        text.append(duration(m["projected_seconds"]), style=_style_for(_alert_of(data, "ETA_LATE")))
    window = data.get("target_window_minutes")
    if window is not None:
        text.append(f" / target {float(window):g}m")
    return text


def _throughput_line(data: dict[str, Any]) -> Text:
    m = data["metrics"]
    text = Text("now ")
    text.append(number(m["current_rows_per_second"]),
                style=_style_for(_alert_of(data, "THROUGHPUT_LOW")))
    text.append(f" · avg {number(m['average_rows_per_second'])}"
                f" · peak {number(m['peak_rows_per_second'])}"
                f" · target {rate(m['target_rows_per_second'])}")
    if m["percent_of_target"] is not None:
        pct = float(m["percent_of_target"])
        text.append(f" ({pct:.0f}%)", style="green" if pct >= 100 else "yellow")
    return text


def _ranges_line(data: dict[str, Any]) -> Text:
    m = data["metrics"]
    text = Text(f"{m['ranges_done']}/{m['ranges_total']} done, {m['ranges_running']} running, "
                f"{m['ranges_pending']} pending, ")
    text.append(f"{m['ranges_slow']} slow", style="yellow" if m["ranges_slow"] else "")
    text.append(", ")
    failed = m["ranges_with_failures"]
    text.append(f"{failed} failed", style=_style_for(_alert_of(data, "RANGES_FAILED"))
                if failed else "")
    text.append(f", {m['ranges_retried']} retried")
    return text


def _slow_line(data: dict[str, Any]) -> Text:
    parts = [f"#{r['range_no']} {(r['worker'] or '?').rsplit('/', 1)[-1]} "
             f"{duration(r['running_seconds'])}" for r in data["slow_ranges"]]
    median = data["slow_ranges"][0]["median_done_seconds"]
    return Text(", ".join(parts) + f" (median {seconds_text(median)})", style="yellow")


def _latency_line(data: dict[str, Any]) -> Text:
    m = data["metrics"]
    return Text(f"p50 {seconds_text(m['latency_p50_seconds'])} · "
                f"p95 {seconds_text(m['latency_p95_seconds'])} · "
                f"p99 {seconds_text(m['latency_p99_seconds'])} · "
                f"max {seconds_text(m['latency_max_seconds'])}")


def _workers_line(data: dict[str, Any]) -> Text:
    m = data["metrics"]
    text = Text(f"{m['active_workers']} active of {m['workers']} · ")
    text.append(f"{rate(m['worker_rows_per_second'])} each",
                style=_style_for(_alert_of(data, "WORKER_EFFICIENCY_LOW")))
    target = m["target_worker_rows_per_second"]
    text.append(f" · target {rate(target)}")
    if m["worker_rows_per_second"] is not None and target:
        text.append(f" ({100 * float(m['worker_rows_per_second']) / float(target):.0f}%)")
    return text


def _phases_line(data: dict[str, Any]) -> Text:
    """Each working connection: its name, phase and range."""
    parts = [f"{w['worker'].rsplit('/', 1)[-1]} {w['phase']}"
             + (f" #{w['range_no']}" if w["range_no"] is not None else "")
             for w in data.get("workers") or []]
    return Text(" · ".join(parts) if parts else "none at work")


def _database_line(data: dict[str, Any]) -> Text:
    d = data["database"]
    ratio = d["cache_hit_ratio"]
    return Text(f"connections {d['connections']}/{d['max_connections']} "
                f"({d['monthend_connections']} monthend) · cache hit "
                f"{'-' if ratio is None else f'{100 * float(ratio):.1f}%'}")


def _queries_line(data: dict[str, Any]) -> Text:
    top = data["database"].get("top_statement")
    if top is None:
        return Text("no statements recorded yet", style="dim")
    if not top["available"]:
        return Text("pg_stat_statements unavailable: `monthend health` says how",
                    style="dim")
    text = Text(f"{seconds_text(float(top['mean_ms']) / 1000)} avg x {top['calls']:,} "
                f"(most time): ")
    text.append(top["query"], style="dim")
    return text


def _checks_line(data: dict[str, Any]) -> Text:
    order = ["preflight", "allocation", "range", "pre-commit", "commit"]
    phases = sorted(data["validation"], key=lambda p: (order.index(p) if p in order else 99, p))
    text = Text()
    if not phases:
        return Text("none yet", style="dim")
    for i, phase in enumerate(phases):
        counts = data["validation"][phase]
        if i:
            text.append(" · ")
        text.append(f"{phase} ")
        text.append(f"{counts['pass']}✓", style="green")
        if counts["fail"]:
            text.append(f" {counts['fail']}✗", style="bold red")
    return text


def _alert_lines(data: dict[str, Any]) -> list[Text]:
    lines = []
    for alert in data["alerts"]:
        limit = alert["critical"] if alert["severity"] == "CRITICAL" else alert["warning"]
        text = Text(f"{alert['severity']} ", style=SEVERITY_STYLE[alert["severity"]])
        text.append(f"{alert['alert']} {measure(alert['value'], alert['unit'])} "
                    f"(limit {measure(limit, alert['unit'])}): ")
        text.append(alert["action"], style="dim")
        lines.append(text)
    return lines or [Text("none", style="green")]


def _event_lines(data: dict[str, Any]) -> list[Text]:
    lines = []
    for event in data["events"]:
        text = Text(f"{_clock(event['at'])} ", style="dim")
        text.append(event["kind"], style=SEVERITY_STYLE.get(event["level"], ""))
        text.append(f" {event['message']}")
        lines.append(text)
    return lines


# ---------------------------------------------------------------- layout

def render(data: dict[str, Any], width: int = 80, height: int = 24,
           footer: str | None = None) -> RenderableType:
    """The dashboard of one document, within ``width`` x ``height`` cells."""
    m = data["metrics"]
    status_style = STATUS_STYLE.get(m["status"], "bold cyan")
    kind = ("draft " if m.get("mode") == "DRAFT"
            else "" if m.get("kind", "RUN") == "RUN" else f"{m['kind'].lower()} ")
    title = Text.assemble(("monthend ", "bold"), f"{kind}batch {m['batch_id']} · {m['period']} · ",
                          (m["status"], status_style), f" · {m['phase']}")
    if height < 6 or width < 30:
        # Too small for a panel: one line says what matters most.
        line = Text.assemble(f"batch {m['batch_id']} ", (m["status"], status_style),
                             f" {m['phase']} {number(m['percent_done'], 1)}% "
                             f"now {rate(m['current_rows_per_second'])}")
        line.truncate(width, overflow="ellipsis")
        return line
    inner = width - 4  # panel borders and padding
    value_width = max(10, inner - LABEL_WIDTH - 1)

    # (priority, label, lines): lower priority numbers are kept first when
    # the height runs out; the display order is the list order.
    sections: list[tuple[int, str, list[Text]]] = [
        (0, "progress", [_progress_line(data, value_width)]),
        (1, "time", [_time_line(data)]),
        (0, "throughput", [_throughput_line(data)]),
        (1, "ranges", [_ranges_line(data)]),
    ]
    if data["slow_ranges"]:
        sections.append((3, "slow", [_slow_line(data)]))
    sections += [
        (5, "latency", [_latency_line(data)]),
        (6, "workers", [_workers_line(data)]),
        (4, "at work", [_phases_line(data)]),
        (7, "database", [_database_line(data)]),
        (9, "queries", [_queries_line(data)]),
        (8, "checks", [_checks_line(data)]),
    ]
    if data.get("error"):
        sections.append((2, "error", [Text(data["error"], style="bold red")]))
    sections.append((2, "alerts", _alert_lines(data)))
    events = _event_lines(data)

    budget = height - 2  # panel borders
    chosen: set[int] = set()
    for index, (_priority, _label, lines) in sorted(enumerate(sections),
                                                    key=lambda item: item[1][0]):
        if len(lines) <= budget:
            chosen.add(index)
            budget -= len(lines)
        elif lines and budget > 0 and sections[index][1] == "alerts":
            # Keep as many alerts as fit, most severe first (already ordered).
            sections[index] = (sections[index][0], "alerts", lines[:budget])
            chosen.add(index)
            budget = 0

    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=LABEL_WIDTH, style="bold", no_wrap=True)
    grid.add_column(width=value_width, no_wrap=True, overflow="ellipsis")
    for index, (_priority, label, lines) in enumerate(sections):
        if index not in chosen:
            continue
        for i, line in enumerate(lines):
            line.no_wrap = True
            line.overflow = "ellipsis"
            grid.add_row(label if i == 0 else "", line)
    if events and budget > 0:
        for i, line in enumerate(events[:budget]):
            line.no_wrap = True
            line.overflow = "ellipsis"
            grid.add_row("events" if i == 0 else "", line)

    subtitle = Text(footer or f"updated {_clock(data['generated_at'])}", style="dim")
    return Panel(grid, title=title, title_align="left", subtitle=subtitle,
                 subtitle_align="right", width=width, height=None, padding=(0, 1))


def render_error(message: str, width: int = 80) -> RenderableType:
    return Panel(Group(Text(message, style="bold red"),
                       Text("retrying; Ctrl-C quits", style="dim")),
                 title="monthend watch", title_align="left", width=width)


# ---------------------------------------------------------------- watch loop

def watch(target: db.Target, batch_id: int | None, interval: float = DEFAULT_INTERVAL,
          console: Console | None = None,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Refresh the dashboard every ``interval`` seconds until interrupted.

    Without a batch it follows the latest one, so a new run shows up by itself.
    A lost connection is retried every interval; the screen says so meanwhile.
    """
    console = console or Console()
    conn: psycopg.Connection | None = None
    footer = f"every {interval:g}s · Ctrl-C quits"
    try:
        with Live(console=console, auto_refresh=False, transient=False,
                  vertical_overflow="crop") as live:
            while True:
                width, height = console.width, max(console.height - 1, 3)
                try:
                    if conn is None or conn.closed:
                        conn = db.connect(target, application_name="monthend watch")
                    data = fetch(conn, batch_id)
                    stamp = _clock(data["generated_at"])
                    frame = render(data, width, height, footer=f"updated {stamp} · {footer}")
                except NoSuchBatch:
                    raise
                except MonthendError as exc:
                    if conn is not None:
                        with contextlib.suppress(psycopg.Error):
                            conn.close()
                    conn = None
                    frame = render_error(f"database unreachable: {exc}", width)
                live.update(frame, refresh=True)
                sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
