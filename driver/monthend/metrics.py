"""Prometheus metrics of a batch and of its database (``monthend metrics``).

The collector reads the same views as the dashboard (batch.batch_metrics,
batch.alert_evaluation, batch.kpi_report, batch.health_score) at each scrape,
over a fresh connection, so the exporter holds no connection between scrapes
and reports ``monthend_up 0`` rather than failing when the database is away.
monitoring/monthend-alerts.yml holds the alerting rules over these metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monthend import db
from monthend.errors import MonthendError

BATCH_LABELS = ["batch_id", "period"]
# (metric name, batch_metrics column, scale, help)
BATCH_GAUGES = [
    ("monthend_batch_elapsed_seconds", "elapsed_seconds", 1,
     "Seconds since the batch started (to its end once finished)."),
    ("monthend_batch_progress_ratio", "percent_done", 0.01,
     "Share of the batch's claimed source rows whose ranges are done."),
    ("monthend_batch_rows_total", "rows_total", 1, "Source rows the batch claimed."),
    ("monthend_batch_rows_done", "rows_done", 1, "Source rows of DONE ranges."),
    ("monthend_batch_eta_seconds", "eta_seconds", 1,
     "Seconds of processing left at the current rate (absent until it can be told)."),
    ("monthend_batch_projected_seconds", "projected_seconds", 1,
     "Elapsed plus ETA: when processing will end, counted from the batch start."),
    ("monthend_source_rows_per_second", "current_rows_per_second", 1,
     "Source rows per second over the throughput window (absent when not processing)."),
    ("monthend_source_rows_per_second_average", "average_rows_per_second", 1,
     "Source rows per second since the first range was claimed."),
    ("monthend_source_rows_per_second_peak", "peak_rows_per_second", 1,
     "Best throughput window of the batch."),
    ("monthend_source_rows_per_second_target", "target_rows_per_second", 1,
     "Throughput the run must sustain (batch.monitor_setting)."),
    ("monthend_journal_entries_per_second", "journal_entries_per_second", 1,
     "Journal entries per second of processing."),
    ("monthend_worker_rows_per_second", "worker_rows_per_second", 1,
     "Throughput per busy worker."),
    ("monthend_worker_rows_per_second_target", "target_worker_rows_per_second", 1,
     "What one worker is expected to process."),
    ("monthend_batch_active_workers", "active_workers", 1, "Workers busy in the window."),
    ("monthend_batch_ranges_with_failures", "ranges_with_failures", 1,
     "Ranges with at least one failed attempt."),
    ("monthend_batch_range_failures", "range_failures", 1, "Failed range attempts."),
    ("monthend_batch_ranges_retried", "ranges_retried", 1, "Ranges attempted more than once."),
    ("monthend_batch_dead_letter_rows", "dead_letter_rows", 1, "Source rows dead-lettered."),
    ("monthend_batch_dead_letter_ratio", "dead_letter_percent", 0.01,
     "Dead-lettered source rows over all source rows of the batch."),
]
RANGE_STATES = ["pending", "running", "done", "failed", "slow"]
QUANTILES = [("0.5", "latency_p50_seconds"), ("0.95", "latency_p95_seconds"),
             ("0.99", "latency_p99_seconds"), ("1", "latency_max_seconds")]
# A draft is built and waits for a decision: nothing runs.
FINISHED = ("COMMITTED", "DRAFT", "SUPERSEDED", "FAILED", "CANCELLED")


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])


class MonthendCollector(Collector):
    """Collects at each scrape: the batch (default: the latest) and the database."""

    def __init__(self, target: db.Target, batch_id: int | None = None) -> None:
        self.target = target
        self.batch_id = batch_id

    def collect(self) -> Iterator[Metric]:
        up = _gauge("monthend_up", "1 when the database answered this scrape, else 0.")
        started = time.monotonic()
        try:
            with db.connect(self.target, application_name="monthend metrics") as conn:
                families = list(self._database(conn)) + list(self._batch(conn))
            up.add_metric([], 1)
        except MonthendError:
            families = []
            up.add_metric([], 0)
        took = _gauge("monthend_scrape_duration_seconds", "Seconds this scrape's queries took.")
        took.add_metric([], round(time.monotonic() - started, 4))
        yield up
        yield took
        yield from families

    def _database(self, conn: Any) -> Iterator[Metric]:
        stats = db.call_one(conn, "database_stats") or {}
        for name, key, doc in [
            ("monthend_db_connections", "connections", "Client connections to the server."),
            ("monthend_db_monthend_connections", "monthend_connections",
             "Client connections whose application_name starts with monthend."),
            ("monthend_db_max_connections", "max_connections", "max_connections."),
            ("monthend_db_lock_waiters", "lock_waiters", "Sessions waiting for a lock."),
            ("monthend_db_cache_hit_ratio", "cache_hit_ratio",
             "Blocks of this database found in shared_buffers over all blocks read."),
        ]:
            if stats.get(key) is not None:
                family = _gauge(name, doc)
                family.add_metric([], float(stats[key]))
                yield family
        health = db.call_one(conn, "health_score")
        if health is not None:
            score = _gauge("monthend_health_score", "Database health score, 0-100 "
                           "(batch.health_score).")
            score.add_metric([], float(health["score"]))
            yield score
        checks = _gauge("monthend_health_check_penalty", "Points a health check takes off "
                        "the score (batch.health_check).", ["check", "status"])
        for check in db.call(conn, "health_checks"):
            checks.add_metric([check["check_name"], check["status"]], float(check["penalty"]))
        yield checks
        thresholds = _gauge("monthend_alert_threshold", "Configured alert thresholds "
                            "(batch.alert_threshold).", ["alert", "severity"])
        for row in db.call(conn, "alert_thresholds"):
            for severity in ("warning", "critical"):
                if row["enabled"] and row[severity] is not None:
                    thresholds.add_metric([row["alert"], severity], float(row[severity]))
        yield thresholds

    def _batch(self, conn: Any) -> Iterator[Metric]:
        batch_id = self.batch_id
        if batch_id is None:
            latest = db.call_one(conn, "latest_batch", period=None)
            if latest is None:
                return
            batch_id = latest["batch_id"]
        m = db.call_one(conn, "batch_metrics", batch_id=batch_id)
        if m is None:
            return
        labels = [str(m["batch_id"]), m["period"]]

        info = _gauge("monthend_batch_info", "The batch the other monthend_batch metrics "
                      "describe, with its kind (RUN, REVERSAL), mode (FINAL, DRAFT), status "
                      "and phase.",
                      [*BATCH_LABELS, "kind", "mode", "status", "phase"])
        info.add_metric([*labels, m["kind"], m["mode"], m["status"], m["phase"]], 1)
        yield info
        for name, doc, value in [
            ("monthend_batch_running", "1 while the batch is unfinished.",
             m["status"] not in FINISHED),
            ("monthend_batch_failed", "1 when the batch is FAILED.", m["status"] == "FAILED"),
            ("monthend_batch_committed", "1 when the batch is COMMITTED.",
             m["status"] == "COMMITTED"),
            ("monthend_batch_warmed_up", "1 once ranges have been processed for the warm-up "
             "time: throughput alerts hold only then.", m["warmed_up"]),
        ]:
            family = _gauge(name, doc, BATCH_LABELS)
            family.add_metric(labels, 1.0 if value else 0.0)
            yield family
        for name, column, scale, doc in BATCH_GAUGES:
            if m[column] is None:
                continue
            family = _gauge(name, doc, BATCH_LABELS)
            family.add_metric(labels, float(m[column]) * scale)
            yield family

        ranges = _gauge("monthend_batch_ranges", "Ranges of the batch by state (slow: running "
                        "well past the median).", [*BATCH_LABELS, "state"])
        for state in RANGE_STATES:
            ranges.add_metric([*labels, state], float(m[f"ranges_{state}"]))
        yield ranges
        latency = _gauge("monthend_range_duration_seconds", "Seconds a DONE range took, by "
                         "quantile (1 = max).", [*BATCH_LABELS, "quantile"])
        for quantile, column in QUANTILES:
            if m[column] is not None:
                latency.add_metric([*labels, quantile], float(m[column]))
        yield latency

        alerts = _gauge("monthend_alert_active", "1 for each alert of the batch that holds now "
                        "(batch.alert_evaluation).", [*BATCH_LABELS, "alert", "severity"])
        for row in db.call(conn, "alert_evaluation", batch_id=batch_id):
            if row["severity"] is not None:
                alerts.add_metric([*labels, row["alert"], row["severity"].lower()], 1)
        yield alerts

        kpi_row = db.call_one(conn, "batch_kpi", batch_id=batch_id)
        kpi = (kpi_row or {}).get("kpi") or {}
        for name, key, doc in [
            ("monthend_batch_kpi_total_seconds", "total_seconds",
             "Batch start to commit (or now), as recorded in the KPIs."),
            ("monthend_batch_kpi_within_target_window", "within_target_window",
             "1 when the batch took no longer than the target window."),
            ("monthend_batch_kpi_within_hard_window", "within_hard_window",
             "1 when the batch took no longer than the hard window."),
            ("monthend_batch_kpi_worker_efficiency_ratio", "worker_efficiency_percent",
             "Rows per worker per second over the per-worker target."),
            ("monthend_batch_kpi_validation_failures", "validation_failures",
             "Failed checks other than range attempts."),
        ]:
            value = kpi.get(key)
            if value is None:
                continue
            family = _gauge(name, doc, BATCH_LABELS)
            scale = 0.01 if key.endswith("_percent") else 1
            family.add_metric(labels, float(value) * scale)
            yield family


def registry_for(target: db.Target, batch_id: int | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonthendCollector(target, batch_id))
    return registry


def exposition(target: db.Target, batch_id: int | None = None) -> str:
    """The metrics in the Prometheus text format, collected now."""
    return generate_latest(registry_for(target, batch_id)).decode()


def write_textfile(target: db.Target, path: str, batch_id: int | None = None) -> None:
    """Write the metrics for node_exporter's textfile collector, atomically."""
    from prometheus_client import write_to_textfile

    write_to_textfile(path, registry_for(target, batch_id))


def serve(target: db.Target, address: str, port: int, batch_id: int | None = None) -> None:
    """Serve /metrics until interrupted; each scrape queries the database."""
    server, thread = start_http_server(port, addr=address,
                                       registry=registry_for(target, batch_id))
    try:
        while thread.is_alive():
            thread.join(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
