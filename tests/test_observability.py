"""Observability: the dashboard of a real finished and a real half-done batch
(`watch --once` and the render function at 80x24), KPIs in `status --json`,
alerts judged on crafted batch rows and recorded once, and the Prometheus
metrics (text file and HTTP) parsed with prometheus_client."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row
from rich.console import Console

from conftest import monthend_cli, preflight_and_allocate
from monthend import dashboard, display

PERIOD = "2025-01"
SECTIONS = ("progress", "time", "throughput", "ranges", "latency", "workers", "database", "queries",
            "checks", "alerts", "events")


def run_small_batch(target) -> dict[str, Any]:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "3000", "--bad-rows", "0.02",
                 "--seed", "3", check=True)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        "300", "--json", check=True)
    return json.loads(proc.stdout)


def screen(data: dict[str, Any], width: int = 80, height: int = 24) -> list[str]:
    console = Console(record=True, width=width, height=height, force_terminal=False)
    console.print(dashboard.render(data, width, height))
    return console.export_text().rstrip("\n").split("\n")


def metric_samples(text: str) -> dict[str, list[Any]]:
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


# ---------------------------------------------------------------- a real batch

@pytest.mark.full
def test_dashboard_kpis_alerts_and_metrics_of_a_finished_batch(target, conn, tmp_path):
    result = run_small_batch(target)
    batch_id = result["batch_id"]
    assert result["status"] == "COMMITTED"

    # The render function at 80x24: every section, within the screen.
    data = dashboard.fetch(conn, batch_id)
    lines = screen(data)
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80, text
    for section in SECTIONS:
        assert any(line.startswith(f"│ {section}") for line in lines), (section, text)
    assert f"batch {batch_id} · {PERIOD} · COMMITTED · done" in lines[0]
    assert "100.0%" in text and "DEAD_LETTER_RATE" in text and "COMMITTED" in text
    assert "p50" in text and "p99" in text and "target 5,556/s" in text

    # The command prints the same frame and exits.
    once = monthend_cli(target, "watch", str(batch_id), "--once", check=True)
    assert "throughput" in once.stdout and "COMMITTED" in once.stdout
    assert len(once.stdout.rstrip("\n").split("\n")) <= 25  # rich's default non-tty height
    latest = monthend_cli(target, "watch", "--once", "--json", check=True)
    assert json.loads(latest.stdout)["metrics"]["batch_id"] == batch_id

    # KPIs: recorded by post-processing, exposed by status --json.
    status = json.loads(monthend_cli(target, "status", "--json", check=True).stdout)
    kpi = status["kpi"]
    assert kpi["success"] is True and kpi["within_target_window"] is True
    assert kpi["within_hard_window"] is True
    assert set(kpi["phases"]) >= {"preflight", "allocation", "processing", "validation",
                                  "commit", "post_processing"}
    assert kpi["target_source_rows_per_second"] == 5556
    assert kpi["target_worker_rows_per_second"] == 720
    assert kpi["source_rows"] == 3000 and kpi["ranges"] == result["ranges"]
    assert kpi["ranges_failed"] == 0 and kpi["ranges_retried"] == 0
    assert kpi["validation_failures"] == 0
    assert kpi["dead_letter_rate_percent"] == pytest.approx(
        100 * result["dead_letter_rows"] / 3000, abs=0.001)
    assert sum(w["rows"] for w in kpi["per_worker"]) == result["posted_rows"]
    assert kpi["alerts_raised"] == {"warning": 1, "critical": 0}
    row = conn.execute("SELECT success, within_target_window FROM batch.kpi "
                       "WHERE batch_id = %s", (batch_id,)).fetchone()
    assert row == {"success": True, "within_target_window": True}

    # The run's monitor judged the alerts: 2% dead letters is one warning, once.
    events = conn.execute("SELECT level, detail FROM batch.event "
                          "WHERE batch_id = %s AND kind = 'ALERT'", (batch_id,)).fetchall()
    assert [(e["level"], e["detail"]["alert"]) for e in events] == [
        ("WARNING", "DEAD_LETTER_RATE")]
    assert "dlq list" in events[0]["detail"]["action"]

    # Prometheus text file, parsed back.
    path = tmp_path / "monthend.prom"
    monthend_cli(target, "metrics", "--textfile", str(path), check=True)
    samples = metric_samples(path.read_text())
    assert samples["monthend_up"][0].value == 1
    info = samples["monthend_batch_info"][0]
    assert info.labels == {"batch_id": str(batch_id), "period": PERIOD, "kind": "RUN",
                           "mode": "FINAL", "status": "COMMITTED", "phase": "done"}
    assert samples["monthend_batch_committed"][0].value == 1
    assert samples["monthend_batch_progress_ratio"][0].value == 1.0
    assert samples["monthend_batch_dead_letter_ratio"][0].value == pytest.approx(
        result["dead_letter_rows"] / 3000, abs=1e-5)
    active = {(s.labels["alert"], s.labels["severity"]) for s in samples["monthend_alert_active"]}
    assert active == {("DEAD_LETTER_RATE", "warning")}
    quantiles = {s.labels["quantile"] for s in samples["monthend_range_duration_seconds"]}
    assert quantiles == {"0.5", "0.95", "0.99", "1"}
    # Exported once; its value from known inputs: test_health_tune.py.
    assert len(samples["monthend_health_score"]) == 1
    assert samples["monthend_batch_kpi_within_target_window"][0].value == 1
    thresholds = {(s.labels["alert"], s.labels["severity"]): s.value
                  for s in samples["monthend_alert_threshold"]}
    assert thresholds[("THROUGHPUT_LOW", "warning")] == 4000
    assert thresholds[("THROUGHPUT_LOW", "critical")] == 2000


def test_dashboard_of_a_batch_half_processed(target, conn):
    """A real batch stopped mid-processing by calling the procedures directly:
    some ranges done, one claimed by a live session and running long."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "3000", "--seed", "5",
                 check=True)
    batch_id = conn.execute("CALL batch.start_run(%s, 2, 300, 3, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    preflight_and_allocate(conn, batch_id)
    for _ in range(4):
        claim = conn.execute("CALL batch.claim_range(%s, 'testhost/w1', NULL, NULL, NULL)",
                             (batch_id,)).fetchone()
        conn.execute("CALL batch.process_range(%s)", (claim["p_range_id"],))
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as holder:
        claim = holder.execute("CALL batch.claim_range(%s, 'testhost/w2', NULL, NULL, NULL)",
                               (batch_id,)).fetchone()
        # Running for a minute: far beyond 3x the median of the done ranges.
        conn.execute("UPDATE batch.range SET started_at = clock_timestamp() - interval '60 s' "
                     "WHERE range_id = %s", (claim["p_range_id"],))

        data = dashboard.fetch(conn, batch_id)
        m = data["metrics"]
        assert (m["status"], m["phase"]) == ("ALLOCATED", "processing")
        assert m["ranges_done"] == 4 and m["ranges_running"] == 1 and m["ranges_slow"] == 1
        assert 0 < m["percent_done"] < 100
        assert m["current_rows_per_second"] > 0 and m["eta_seconds"] > 0
        # The long-running claim dates processing back a minute: past the warm-up,
        # and four small ranges in that minute are far below the target.
        assert m["warmed_up"] is True
        assert {(a["alert"], a["severity"]) for a in data["alerts"]} >= {
            ("THROUGHPUT_LOW", "CRITICAL")}
        assert [r["worker"] for r in data["slow_ranges"]] == ["testhost/w2"]

        lines = screen(data)
        text = "\n".join(lines)
        assert len(lines) <= 24, text
        assert "processing" in lines[0] and "ETA" in text
        assert any(line.startswith("│ slow") and "w2 1m0" in line for line in lines), text
        ranges = conn.execute("SELECT range_count FROM batch.run WHERE batch_id = %s",
                              (batch_id,)).fetchone()["range_count"]
        assert "1 slow" in text and f"4/{ranges} done" in text

        # Smaller terminals keep the most urgent sections.
        small = screen(data, width=60, height=10)
        assert len(small) <= 10 and max(len(line) for line in small) <= 60
        small_text = "\n".join(small)
        for section in ("progress", "throughput", "ranges", "slow", "alerts"):
            assert f"│ {section}" in small_text, (section, small_text)
        assert "│ events" not in small_text and "│ checks" not in small_text
        tiny = screen(data, width=50, height=4)
        assert len(tiny) == 1 and "processing 40.0%" in tiny[0], tiny

        # From another process, as an operator on another host would.
        once = monthend_cli(target, "watch", str(batch_id), "--once", check=True)
        assert "processing" in once.stdout and "slow" in once.stdout


@pytest.mark.full
def test_run_display_shows_the_dashboard_on_a_terminal(target, conn):
    run_small_batch(target)
    batch_id = conn.execute("SELECT max(batch_id) AS b FROM batch.run").fetchone()["b"]
    shown = display.RunDisplay()
    shown.console = Console(record=True, width=80, height=25, force_terminal=True)
    shown.interactive = True
    hooks = shown.hooks()
    hooks.on_phase("processing")
    hooks.on_tick(conn, batch_id)
    hooks.on_ranges({"claimed_rows": 1, "rows_done": 1, "ranges_done": 1, "range_count": 1,
                     "ranges_running": 0, "ranges_failed": 0, "retries": 0})
    shown.close()
    text = shown.console.export_text()
    assert "throughput" in text and f"batch {batch_id}" in text


def test_dashboard_of_a_missing_batch_is_a_usage_error(target, conn):
    proc = monthend_cli(target, "watch", "--once")
    assert proc.returncode == 2 and "no batch has been run yet" in proc.stderr
    proc = monthend_cli(target, "watch", "42", "--once")
    assert proc.returncode == 2 and "batch 42 does not exist" in proc.stderr


# ---------------------------------------------------------------- crafted batches

def craft_batch(conn, *, claimed: int = 1_000_000, source: int | None = None, dead: int = 0,
                processing_for: int = 600, window_rows: int = 150_000, window_ranges: int = 5,
                running: int = 2, workers: int = 4, failed_ranges: int = 0,
                period: str = PERIOD) -> int:
    """A batch in processing, written as superuser straight into the control
    tables: one range done long ago, ``window_rows`` finished within the last
    30 s (the throughput window), ``running`` ranges claimed and the rest
    pending; ``workers`` distinct workers busy in the window."""
    year, month = map(int, period.split("-"))
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date) "
                 "VALUES (%(p)s, make_date(%(y)s, %(m)s, 1), "
                 "(make_date(%(y)s, %(m)s, 1) + interval '1 month - 1 day')::date) "
                 "ON CONFLICT DO NOTHING", {"p": period, "y": year, "m": month})
    batch_id = conn.execute(
        "INSERT INTO batch.run (period, status, workers, range_size, max_attempts, started_at,"
        " source_rows, claimed_rows, dead_letter_rows, je_count, range_count)"
        " VALUES (%s, 'ALLOCATED', %s, 10000, 3, clock_timestamp() - %s * interval '1 s',"
        " %s, %s, %s, %s, 0) RETURNING batch_id",
        (period, workers, processing_for + 30, source or claimed + dead, claimed, dead,
         3 * claimed)).fetchone()["batch_id"]
    ranges: list[tuple[str, int, float | None, float | None, int]] = [
        ("DONE", 10_000, processing_for, processing_for - 5, 0)]
    ranges += [("DONE", window_rows // window_ranges, 20, 5, i) for i in range(window_ranges)]
    ranges += [("RUNNING", 10_000, 2, None, window_ranges + i) for i in range(running)]
    left = claimed - sum(r[1] for r in ranges)
    pending = max(1, failed_ranges)
    ranges += [("PENDING", left // pending, None, None, 0) for _ in range(pending)]
    ids = []
    for no, (status, rows, started_ago, finished_ago, worker) in enumerate(ranges, start=1):
        ids.append(conn.execute(
            "INSERT INTO batch.range (batch_id, range_no, source_type, lo_source_id,"
            " hi_source_id, row_count, je_offset, je_count, status, attempts, worker,"
            " started_at, finished_at)"
            " VALUES (%(b)s, %(no)s, 'PREMIUM', %(no)s * 100000, %(no)s * 100000 + 99999,"
            " %(rows)s, 0, 3 * %(rows)s, %(status)s, %(attempts)s, %(worker)s,"
            " clock_timestamp() - %(started)s * interval '1 s',"
            " clock_timestamp() - %(finished)s * interval '1 s') RETURNING range_id",
            {"b": batch_id, "no": no, "rows": rows, "status": status,
             "attempts": 0 if status == "PENDING" else 1,
             "worker": None if status == "PENDING" else f"testhost/w{worker % workers + 1}",
             "started": started_ago, "finished": finished_ago}).fetchone()["range_id"])
    for range_id in ids[-failed_ranges:] if failed_ranges else []:
        conn.execute("INSERT INTO batch.validation_result (batch_id, range_id, phase,"
                     " check_name, status, expected, actual)"
                     " VALUES (%s, %s, 'range', 'range_attempt', 'FAIL', 'attempt 1 succeeds',"
                     " 'deadlock detected')", (batch_id, range_id))
    return batch_id


def severities(conn, batch_id: int) -> dict[str, str]:
    rows = conn.execute("SELECT alert, severity FROM batch.alert_evaluation "
                        "WHERE batch_id = %s AND severity IS NOT NULL", (batch_id,)).fetchall()
    return {r["alert"]: r["severity"] for r in rows}


def alert_events(conn, batch_id: int) -> list[tuple[str, str, str]]:
    rows = conn.execute("SELECT kind, level, detail FROM batch.event WHERE batch_id = %s "
                        "AND kind IN ('ALERT', 'ALERT_CLEARED') ORDER BY event_id",
                        (batch_id,)).fetchall()
    return [(r["kind"], r["level"], r["detail"]["alert"]) for r in rows]


SCENARIOS = {
    # 5,000 rows/s with 4 workers, 13 min projected: nothing to say.
    "healthy": ({}, {}),
    "throughput_warning": ({"window_rows": 105_000}, {"THROUGHPUT_LOW": "WARNING"}),
    "throughput_critical": ({"window_rows": 45_000, "workers": 2},
                            {"THROUGHPUT_LOW": "CRITICAL"}),
    # 150 rows/s, but processing began 20 s ago: no throughput, ETA or worker alert.
    "warm_up": ({"processing_for": 20, "window_rows": 3_000}, {}),
    "eta_warning": ({"claimed": 10_000_000}, {"ETA_LATE": "WARNING"}),
    "eta_critical": ({"claimed": 30_000_000}, {"ETA_LATE": "CRITICAL"}),
    "worker_efficiency": ({"window_rows": 135_000, "window_ranges": 10, "workers": 10},
                          {"WORKER_EFFICIENCY_LOW": "WARNING"}),
    "ranges_failed_5": ({"failed_ranges": 5}, {}),
    "ranges_failed_warning": ({"failed_ranges": 6}, {"RANGES_FAILED": "WARNING"}),
    "ranges_failed_critical": ({"failed_ranges": 21}, {"RANGES_FAILED": "CRITICAL"}),
    "dead_letters_at_limit": ({"dead": 1_000, "source": 1_000_000}, {}),
    "dead_letters_warning": ({"dead": 1_100, "source": 1_000_000},
                             {"DEAD_LETTER_RATE": "WARNING"}),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alerts_fire_at_their_thresholds_and_are_recorded_once(conn, scenario):
    kwargs, expected = SCENARIOS[scenario]
    batch_id = craft_batch(conn, **kwargs)
    assert severities(conn, batch_id) == expected
    recorded = conn.execute("SELECT batch.evaluate_alerts(%s) AS n", (batch_id,)).fetchone()["n"]
    assert recorded == len(expected)
    assert conn.execute("SELECT batch.evaluate_alerts(%s) AS n",
                        (batch_id,)).fetchone()["n"] == 0
    assert alert_events(conn, batch_id) == [("ALERT", level, alert)
                                            for alert, level in sorted(expected.items())]
    for event in conn.execute("SELECT message, detail FROM batch.event WHERE batch_id = %s "
                              "AND kind = 'ALERT'", (batch_id,)):
        assert event["detail"]["action"] and event["detail"]["action"] in event["message"]


def test_alert_escalates_clears_and_follows_configured_thresholds(conn):
    batch_id = craft_batch(conn, window_rows=105_000, window_ranges=7,  # 3,500 rows/s
                           workers=2)
    conn.execute("SELECT batch.evaluate_alerts(%s)", (batch_id,))
    # Four of the seven window ranges finished long ago: 1,500 rows/s.
    conn.execute("UPDATE batch.range SET finished_at = clock_timestamp() - interval '100 s' "
                 "WHERE range_id IN (SELECT range_id FROM batch.range WHERE batch_id = %s "
                 "AND status = 'DONE' ORDER BY range_no DESC LIMIT 4)", (batch_id,))
    conn.execute("SELECT batch.evaluate_alerts(%s)", (batch_id,))
    # Throughput recovers: 7 x 22,500 rows within the window, 5,250 rows/s.
    conn.execute("UPDATE batch.range SET finished_at = clock_timestamp() - interval '5 s', "
                 "row_count = 22500 WHERE batch_id = %s AND status = 'DONE' AND range_no > 1",
                 (batch_id,))
    conn.execute("SELECT batch.evaluate_alerts(%s)", (batch_id,))
    assert alert_events(conn, batch_id) == [
        ("ALERT", "WARNING", "THROUGHPUT_LOW"),
        ("ALERT", "CRITICAL", "THROUGHPUT_LOW"),
        ("ALERT_CLEARED", "INFO", "THROUGHPUT_LOW"),
    ]
    # DBAs tune thresholds in the table: 5,250 rows/s now is below a 6,000 warning.
    conn.execute("UPDATE batch.alert_threshold SET warning = 6000 WHERE alert = 'THROUGHPUT_LOW'")
    assert severities(conn, batch_id) == {"THROUGHPUT_LOW": "WARNING"}
    conn.execute("UPDATE batch.alert_threshold SET enabled = false "
                 "WHERE alert = 'THROUGHPUT_LOW'")
    assert severities(conn, batch_id) == {}


def test_roles_read_the_dashboard_and_only_the_runner_records_alerts(conn):
    batch_id = craft_batch(conn, window_rows=45_000, workers=2)
    conn.execute("SET ROLE monthend_auditor")
    try:
        assert conn.execute("SELECT batch.dashboard(%s) AS d",
                            (batch_id,)).fetchone()["d"]["alerts"]
        assert conn.execute("SELECT count(*) AS n FROM batch.health_check").fetchone()["n"] > 5
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT batch.evaluate_alerts(%s)", (batch_id,))
    finally:
        conn.execute("RESET ROLE")
    conn.execute("SET ROLE monthend_runner")
    try:
        assert conn.execute("SELECT batch.evaluate_alerts(%s) AS n",
                            (batch_id,)).fetchone()["n"] == 1
    finally:
        conn.execute("RESET ROLE")


# ---------------------------------------------------------------- metrics

def test_metrics_of_a_crafted_batch_on_stdout_and_over_http(target, conn):
    batch_id = craft_batch(conn, window_rows=105_000)
    samples = metric_samples(monthend_cli(target, "metrics", check=True).stdout)
    labels = {"batch_id": str(batch_id), "period": PERIOD}
    assert samples["monthend_batch_warmed_up"][0].labels == labels
    assert samples["monthend_batch_warmed_up"][0].value == 1
    assert samples["monthend_source_rows_per_second"][0].value == pytest.approx(3500, rel=0.01)
    assert samples["monthend_batch_running"][0].value == 1
    states = {s.labels["state"]: s.value for s in samples["monthend_batch_ranges"]}
    assert states == {"pending": 1, "running": 2, "done": 6, "failed": 0, "slow": 0}
    active = {(s.labels["alert"], s.labels["severity"]) for s in samples["monthend_alert_active"]}
    assert active == {("THROUGHPUT_LOW", "warning")}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "monthend.cli", "--dsn", target.conninfo, "metrics",
           "--batch", str(batch_id), "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    try:
        body = None
        deadline = time.monotonic() + 20
        while body is None and time.monotonic() < deadline:
            url = f"http://127.0.0.1:{port}/metrics"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read().decode()
            if body is None:
                time.sleep(0.2)
        assert body is not None, server.stderr.read().decode() if server.poll() else "no reply"
        served = metric_samples(body)
        assert served["monthend_up"][0].value == 1
        assert served["monthend_batch_info"][0].labels["batch_id"] == str(batch_id)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_metrics_say_the_database_is_down_instead_of_failing(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "down.prom"
    proc = subprocess.run(
        [sys.executable, "-m", "monthend.cli", "--dsn",
         f"host=127.0.0.1 port={port} user=nobody dbname=none connect_timeout=2",
         "metrics", "--textfile", str(path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    samples = metric_samples(path.read_text())
    assert samples["monthend_up"][0].value == 0
    assert "monthend_batch_info" not in samples
