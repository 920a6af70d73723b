"""Progress for a run: a rich progress bar with throughput and ETA on a terminal,
plain timestamped lines otherwise (logs, schedulers)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from monthend.runner import Progress as ProgressHooks


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

    def hooks(self) -> ProgressHooks:
        return ProgressHooks(on_phase=self.phase, on_ranges=self.ranges)

    def phase(self, name: str) -> None:
        if self.quiet:
            return
        if self._progress is not None and name != "processing":
            self._progress.stop()
            self._progress = None
        self.console.print(f"[bold]{time.strftime('%H:%M:%S')}[/] phase: {name}",
                           highlight=False)

    def ranges(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        total = row["claimed_rows"] or 0
        done = row["rows_done"] or 0
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
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
