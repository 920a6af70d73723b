"""Database health views and `monthend health`, `monthend tune` for two machine
sizes, and the Prometheus alert rules (promtool check and test, and their
thresholds against the database's)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from conftest import monthend_cli, repo_root
from monthend.embedded import SERVER_MALLOC_ENVIRONMENT

RULES = repo_root() / "monitoring" / "monthend-alerts.yml"
RULE_TESTS = repo_root() / "monitoring" / "monthend-alerts.test.yml"
STATUSES = {"OK", "INFO", "WARNING", "CRITICAL"}


# ---------------------------------------------------------------- health

def test_health_checks_score_and_command(target, conn):
    checks = conn.execute("SELECT * FROM batch.health_check").fetchall()
    names = {c["check_name"] for c in checks}
    assert names >= {"connections", "cache_hit_ratio", "lock_waits", "idle_in_transaction",
                     "long_transactions", "bloat", "dead_tuples", "xid_wraparound",
                     "checkpoints", "temp_files", "statement_statistics"}
    assert all(c["status"] in STATUSES and c["detail"] and c["action"] for c in checks)
    score = conn.execute("SELECT * FROM batch.health_score").fetchone()
    assert score["score"] == max(0, 100 - sum(c["penalty"] for c in checks))
    assert {r["check"] for r in score["reasons"]} == {
        c["check_name"] for c in checks if c["status"] != "OK"}

    connections = conn.execute("SELECT * FROM batch.health_connections").fetchall()
    assert sum(r["connections"] for r in connections) == connections[0]["connections_used"] >= 1
    cache = {r["scope"]: r for r in conn.execute("SELECT * FROM batch.health_cache")}
    assert {"database", "heap", "index"} <= set(cache)
    assert 0 <= cache["database"]["hit_ratio"] <= 1

    result = json.loads(monthend_cli(target, "health", "--json").stdout)
    assert set(result) >= {"score", "status", "reasons", "checks", "connections", "cache",
                           "lock_waits", "slow_statements", "bloat"}
    assert 0 <= result["score"] <= 100
    text = monthend_cli(target, "health")
    assert text.returncode == (1 if result["status"] == "CRITICAL" else 0)
    assert re.match(r"health \d+/100 \((OK|WARNING|CRITICAL)\)", text.stdout)
    assert "connections:" in text.stdout and "cache hit ratio" in text.stdout


def test_lock_waits_show_the_blocking_chain(target, conn):
    """holder reads a table and stays idle in its transaction; first wants to
    alter the table and waits for holder; second only reads, but queues behind
    first: the chain of second is second <- first <- holder."""
    conn.execute("CREATE TABLE public.contended (id int)")
    with psycopg.connect(target.conninfo, autocommit=False) as holder, \
            psycopg.connect(target.conninfo, autocommit=True) as first, \
            psycopg.connect(target.conninfo, autocommit=True) as second:
        holder.execute("SET application_name = 'test holder'")
        holder.execute("SELECT * FROM public.contended")
        holder_pid = holder.info.backend_pid
        first_pid, second_pid = first.info.backend_pid, second.info.backend_pid
        errors: list[BaseException] = []

        def wait_on(connection: psycopg.Connection, sql: str) -> None:
            try:
                connection.execute("SET lock_timeout = '20s'")
                connection.execute(sql)
            except psycopg.Error as exc:
                errors.append(exc)

        threads = [threading.Thread(target=wait_on, args=(
                       first, "ALTER TABLE public.contended ADD COLUMN note text")),
                   threading.Thread(target=wait_on, args=(
                       second, "SELECT * FROM public.contended"))]
        started: list[threading.Thread] = []
        try:
            threads[0].start()
            started.append(threads[0])
            _wait_for(conn, 1)
            threads[1].start()
            started.append(threads[1])
            rows = {r["pid"]: r for r in _wait_for(conn, 2)}
            assert rows[first_pid]["blocked_by"] == [holder_pid]
            assert rows[first_pid]["blocking_chain"] == [first_pid, holder_pid]
            assert rows[second_pid]["blocked_by"] == [first_pid]
            assert rows[second_pid]["blocking_chain"] == [second_pid, first_pid, holder_pid]
            assert rows[second_pid]["root_blocker"] == holder_pid
            assert rows[second_pid]["root_state"] == "idle in transaction"
            assert rows[second_pid]["root_application"] == "test holder"
            assert "contended" in rows[first_pid]["waiting_for"]
            assert "AccessExclusiveLock" in rows[first_pid]["waiting_for"]
            check = conn.execute("SELECT * FROM batch.health_check "
                                 "WHERE check_name = 'lock_waits'").fetchone()
            assert check["value"] == "2" and "1 root blocker" in check["detail"]
            health = json.loads(monthend_cli(target, "health", "--json").stdout)
            assert {w["pid"] for w in health["lock_waits"]} == {first_pid, second_pid}
            assert "lock waits:" in monthend_cli(target, "health").stdout
        finally:
            holder.rollback()
            for thread in started:
                thread.join(timeout=30)
    assert not errors


def _wait_for(conn: psycopg.Connection, waiters: int) -> list[dict]:
    for _ in range(200):
        rows = conn.execute("SELECT * FROM batch.health_lock_waits").fetchall()
        if len(rows) >= waiters:
            return rows
        threading.Event().wait(0.05)
    raise AssertionError(f"expected {waiters} lock waiters, saw {rows}")


def test_bloat_estimate_finds_a_bloated_table(conn):
    conn.execute("CREATE TABLE public.bloated AS "
                 "SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 50000) AS g")
    conn.execute("CREATE INDEX bloated_id_idx ON public.bloated (id)")
    conn.execute("DELETE FROM public.bloated WHERE id % 10 <> 0")
    conn.execute("ANALYZE public.bloated")
    rows = {(r["kind"], r["relation"]): r for r in conn.execute(
        "SELECT * FROM batch.health_bloat WHERE schema_name = 'public'")}
    table = rows[("table", "bloated")]
    # 9 rows in 10 deleted: about nine tenths of the pages are waste.
    assert 0.8 < table["estimated_bloat_ratio"] < 0.95, table
    assert table["estimated_bloat_bytes"] > 0.8 * table["size_bytes"]
    index = rows[("index", "bloated_id_idx")]
    assert index["table_name"] == "bloated" and index["estimated_bloat_ratio"] > 0.8
    # A freshly written table carries little.
    conn.execute("CREATE TABLE public.compact AS "
                 "SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 5000) AS g")
    conn.execute("ANALYZE public.compact")
    compact = conn.execute("SELECT * FROM batch.health_bloat "
                           "WHERE relation = 'compact'").fetchone()
    assert compact["estimated_bloat_ratio"] < 0.15, compact


def test_slow_statements_or_a_note_when_unavailable(conn):
    conn.execute("SELECT count(*) FROM gl.account")
    rows = conn.execute("SELECT * FROM batch.health_slow_statements").fetchall()
    assert rows and all(r["available"] for r in rows)
    assert all(r["calls"] >= 1 and r["query"] for r in rows)
    assert [r["total_seconds"] for r in rows] == sorted((r["total_seconds"] for r in rows),
                                                        reverse=True)
    conn.execute("DROP EXTENSION pg_stat_statements")
    rows = conn.execute("SELECT * FROM batch.health_slow_statements").fetchall()
    assert len(rows) == 1 and rows[0]["available"] is False
    assert "CREATE EXTENSION pg_stat_statements" in rows[0]["note"]
    check = conn.execute("SELECT * FROM batch.health_check "
                         "WHERE check_name = 'statement_statistics'").fetchone()
    assert check["status"] == "INFO" and check["penalty"] == 0


# ---------------------------------------------------------------- tune

def _settings(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+) = (\S+)\s+# (.+)", line)
        assert match, f"not 'name = value  # why': {line!r}"
        found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize(("ram", "cores", "expected"), [
    ("256GB", "32", {"shared_buffers": "64GB", "effective_cache_size": "192GB",
                     "work_mem": "1GB", "maintenance_work_mem": "8GB", "max_connections": "62",
                     "max_parallel_workers": "32", "max_parallel_workers_per_gather": "8",
                     "max_worker_processes": "36", "max_wal_size": "64GB",
                     "checkpoint_completion_target": "0.9", "wal_buffers": "64MB"}),
    ("16GB", "4", {"shared_buffers": "4GB", "effective_cache_size": "12GB",
                   "work_mem": "512MB", "maintenance_work_mem": "819MB",
                   "max_connections": "50", "max_parallel_workers": "4",
                   "max_parallel_workers_per_gather": "2", "max_worker_processes": "8",
                   "max_wal_size": "8GB", "min_wal_size": "2GB", "wal_buffers": "64MB"}),
])
def test_tune_sizes_the_window_from_the_machine(target, conn, ram, cores, expected):
    proc = monthend_cli(target, "tune", "--ram", ram, "--cores", cores, check=True)
    window = _settings(proc.stdout)
    assert {k: window[k] for k in expected} == expected
    assert window["synchronous_commit"] == "on"
    assert f"--ram {ram} --cores {cores} --restore" in proc.stdout
    # Every name is a real server setting, and every size parses as one.
    known = {r["name"] for r in conn.execute("SELECT name FROM pg_settings")}
    assert set(window) <= known, set(window) - known
    for name in ("shared_buffers", "effective_cache_size", "work_mem", "max_wal_size"):
        assert conn.execute("SELECT pg_size_bytes(%s) > 0 AS ok",
                            (window[name],)).fetchone()["ok"]

    restore = _settings(monthend_cli(target, "tune", "--ram", ram, "--cores", cores,
                                     "--restore", check=True).stdout)
    assert set(restore) <= set(window) and restore["max_connections"] == "200"
    assert restore["checkpoint_timeout"] == "5min" and restore["jit"] == "on"
    document = json.loads(monthend_cli(target, "tune", "--ram", ram, "--cores", cores,
                                       "--json", check=True).stdout)
    assert document["window"]["shared_buffers"] == expected["shared_buffers"]


def test_tune_refuses_a_size_it_cannot_read(target):
    proc = monthend_cli(target, "tune", "--ram", "lots", "--cores", "4")
    assert proc.returncode == 2 and "not a memory size" in proc.stderr


# ---------------------------------------------------------------- alert rules

def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does)")
    return found


def test_promtool_checks_and_tests_the_alert_rules():
    checked = subprocess.run([_promtool(), "check", "rules", str(RULES)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name],
                            capture_output=True, text=True, check=False,
                            cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# The metric each database alert is judged on, as the rules write it, and the
# factor from the database's unit to the metric's.
RULE_METRICS = {
    "THROUGHPUT_LOW": ("monthend_source_rows_per_second", 1),
    "ETA_LATE": ("monthend_batch_projected_seconds / 60", 1),
    "WORKER_EFFICIENCY_LOW": ("monthend_worker_rows_per_second", 1),
    "RANGES_FAILED": ("monthend_batch_ranges_with_failures", 1),
    "DEAD_LETTER_RATE": ("monthend_batch_dead_letter_ratio", 0.01),
}


def test_alert_rules_use_the_database_thresholds(conn):
    rules = [rule for group in yaml.safe_load(Path(RULES).read_text())["groups"]
             for rule in group["rules"]]
    thresholds = conn.execute("SELECT * FROM batch.alert_threshold").fetchall()
    assert {t["alert"] for t in thresholds} == set(RULE_METRICS)
    for row in thresholds:
        metric, factor = RULE_METRICS[row["alert"]]
        operator = "<" if row["direction"] == "below" else ">"
        for severity in ("warning", "critical"):
            matching = [r for r in rules if r["labels"].get("monthend_alert") == row["alert"]
                        and r["labels"]["severity"] == severity]
            if row[severity] is None:
                assert not matching, (row["alert"], severity)
                continue
            assert len(matching) == 1, (row["alert"], severity)
            expr = matching[0]["expr"]
            match = re.match(rf"{re.escape(metric)} {operator} ([0-9.]+)\b", expr)
            assert match, (row["alert"], expr)
            assert float(match.group(1)) == pytest.approx(float(row[severity]) * factor)
            assert ("monthend_batch_warmed_up == 1" in expr) == row["after_warmup"]
            assert matching[0]["annotations"]["action"] == row["action"]


def test_role_can_read_health_views(target):
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET ROLE monthend_runner")
        assert conn.execute("SELECT score FROM batch.health_score").fetchone()["score"] >= 0
        assert conn.execute("SELECT count(*) AS n FROM batch.health_bloat").fetchone()["n"] >= 0


def test_tune_prints_the_server_environment(target):
    text = monthend_cli(target, "tune", "--ram", "24GB", "--cores", "2", check=True).stdout
    document = json.loads(monthend_cli(target, "tune", "--ram", "24GB", "--cores", "2",
                                       "--json", check=True).stdout)
    assert document["server_environment"] == SERVER_MALLOC_ENVIRONMENT
    for name, value in SERVER_MALLOC_ENVIRONMENT.items():
        assert f"#   {name}={value}\n" in text


def test_embedded_server_runs_with_the_malloc_environment(private_cluster):
    """The thresholds reach the postmaster, and so every backend it forks."""
    pid = (private_cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for name, value in SERVER_MALLOC_ENVIRONMENT.items():
        assert f"{name}={value}".encode() in environ
