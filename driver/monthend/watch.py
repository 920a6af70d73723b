"""``monthend verify --watch``: an auditor that keeps verifying.

Every interval it verifies incrementally since the head kept in its head
file (monthend.verify, scope "incremental"), replaces the file with the new
head when all is well, and exports the verdict as Prometheus gauges, over
HTTP (--port) or to a file for node_exporter's textfile collector
(--textfile). It writes nothing to the database: no VERIFICATION_RUN event
a round (a minute's rounds would fill the chain with its own records); run
it with the auditor role, which can write nothing else either.

    monthend_audit_ok               1 when the last verification found nothing, else 0
    monthend_audit_verified_seq     the chain row verified up to (the kept head)
    monthend_audit_verify_seconds   how long the last verification took
    monthend_audit_problems         problems the last verification found

A failed verification leaves the head file as it was, so every later round
verifies the same span again until someone acts: the gauge stays 0 and
MonthendAuditFailed (monitoring/monthend-alerts.yml) keeps firing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile

from monthend import db
from monthend import verify as verification
from monthend.errors import MonthendError


class AuditGauges:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ok = Gauge("monthend_audit_ok", "1 when the last audit verification found no "
                        "problem, 0 when it found one or could not run", registry=self.registry)
        self.verified_seq = Gauge("monthend_audit_verified_seq", "The audit chain row verified "
                                  "up to: the head kept by the last passing verification",
                                  registry=self.registry)
        self.seconds = Gauge("monthend_audit_verify_seconds", "Seconds the last audit "
                             "verification took", registry=self.registry)
        self.problems = Gauge("monthend_audit_problems", "Problems the last audit verification "
                              "found", registry=self.registry)

    def record(self, result: dict[str, Any] | None, kept_seq: int, seconds: float) -> None:
        self.ok.set(1 if result and result["ok"] else 0)
        self.verified_seq.set(kept_seq)
        self.seconds.set(seconds)
        self.problems.set(sum(result["problem_counts"].values()) if result else 0)


def _round(target: db.Target, head_file: Path, jobs: int) -> tuple[dict[str, Any] | None, str]:
    try:
        result = verification.verify(target, record_run=False, since_head=head_file, jobs=jobs)
    except MonthendError as exc:
        return None, f"verification could not run: {str(exc).strip()}"
    report = verification.text(result)
    if result["ok"]:
        report = next(line for line in report.splitlines() if line.startswith("OK"))
    return result, report


def watch(target: db.Target, head_file: Path, interval: float, *, count: int | None = None,
          port: int | None = None, address: str = "0.0.0.0", textfile: Path | None = None,
          jobs: int = 1, report: Callable[[str], Any] | None = None) -> dict[str, Any] | None:
    """Verify every ``interval`` seconds until stopped (SIGINT, SIGTERM) or
    ``count`` rounds are done; the last round's result."""
    gauges = AuditGauges()
    if port is not None:
        start_http_server(port, addr=address, registry=gauges.registry)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    result: dict[str, Any] | None = None
    rounds = 0
    while not stop.is_set():
        result, line = _round(target, head_file, jobs)
        kept = verification.read_head_file(head_file)
        gauges.record(result, kept.seq if kept else 0, result["seconds"] if result else 0.0)
        if textfile is not None:
            write_to_textfile(str(textfile), gauges.registry)
        if report:
            report(line)
        rounds += 1
        if count is not None and rounds >= count:
            break
        stop.wait(interval)
    return result
