"""Progress for a run: on a terminal the live dashboard of `monthend watch` while
ranges are processed (a rich progress bar if the dashboard cannot be read),
plain timestamped lines otherwise (logs, schedulers)."""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from monthend import dashboard
from monthend.errors import MonthendError
from monthend.runner import Progress as ProgressHooks

DASHBOARD_SECONDS = 2.0


class RunDisplay:
    """Turns the runner's hooks into output on stderr (stdout is kept for --json)."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.interactive = self.console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task = None
        self._last_plain = 0.0
        self._started = time.monotonic()
        self._live: Live | None = None
        self._dashboard_failed = False
        self._next_frame = 0.0

    def hooks(self) -> ProgressHooks:
        return ProgressHooks(on_phase=self.phase, on_ranges=self.ranges, on_tick=self.tick,
                             on_note=self.note)

    def note(self, text: str) -> None:
        """Something the operator must know; on stderr even with --json."""
        self.console.print(f"monthend: {text}", highlight=False, soft_wrap=True)

    def tick(self, conn: psycopg.Connection, batch_id: int) -> None:
        """Redraw the dashboard from the database every DASHBOARD_SECONDS."""
        if not self.interactive or self._dashboard_failed:
            return
        if time.monotonic() < self._next_frame:
            return
        self._next_frame = time.monotonic() + DASHBOARD_SECONDS
        try:
            data = dashboard.fetch(conn, batch_id)
        except MonthendError:
            # An older schema without batch.dashboard: keep the progress bar.
            self._dashboard_failed = True
            return
        if self._live is None:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            self._live = Live(console=self.console, auto_refresh=False, transient=False,
                              vertical_overflow="crop")
            self._live.start()
        frame = dashboard.render(data, self.console.width, max(self.console.height - 1, 3),
                                 footer="Ctrl-C stops the driver; `monthend resume` continues")
        self._live.update(frame, refresh=True)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def phase(self, name: str) -> None:
        if self.quiet:
            return
        if self._progress is not None and name != "processing":
            self._progress.stop()
            self._progress = None
        if name != "processing":
            self._stop_live()
        self.console.print(f"[bold]{time.strftime('%H:%M:%S')}[/] phase: {name}",
                           highlight=False)

    def ranges(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        total = row["claimed_rows"] or 0
        done = row["rows_done"] or 0
        if self.interactive and self._live is not None:
            if row["ranges_done"] == row["range_count"]:
                self._next_frame = 0.0  # the last frame shows every range done
            return  # the dashboard shows the ranges
        if self.interactive:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("ranges {task.fields[ranges]}"), BarColumn(),
                    TaskProgressColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]} rows/s"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=self.console, transient=False)
                self._progress.start()
                self._task = self._progress.add_task("rows", total=total or 1, ranges="",
                                                     rate="-")
            speed = self._progress.tasks[0].speed
            self._progress.update(self._task, completed=done, total=total or 1,
                                  ranges=f"{row['ranges_done']}/{row['range_count']}",
                                  rate=f"{speed:,.0f}" if speed else "-")
        elif time.monotonic() - self._last_plain >= 5 or done == total:
            self._last_plain = time.monotonic()
            elapsed = time.monotonic() - self._started
            print(f"{time.strftime('%H:%M:%S')} ranges {row['ranges_done']}/{row['range_count']}"
                  f" rows {done}/{total} running {row['ranges_running']}"
                  f" failed {row['ranges_failed']} retries {row['retries']}"
                  f" elapsed {elapsed:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop_live()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
