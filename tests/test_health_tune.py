"""Database health views and `monthend health`, `monthend tune` for two machine
sizes, and the Prometheus alert rules (promtool check and test, and their
thresholds against the database's)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from conftest import monthend_cli, repo_root

RULES = repo_root() / "monitoring" / "monthend-alerts.yml"
RULE_TESTS = repo_root() / "monitoring" / "monthend-alerts.test.yml"
STATUSES = {"OK", "INFO", "WARNING", "CRITICAL"}
# glibc's malloc thresholds for the server (32 MB, 256 MB, 16 MB), written out
# here rather than imported from the module that sets them.
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "33554432",
                      "MALLOC_TRIM_THRESHOLD_": "268435456",
                      "MALLOC_TOP_PAD_": "16777216"}


# ---------------------------------------------------------------- health

# Rows a rolled-back COPY leaves dead: over the dead_tuples check's 100,000.
DEAD_ROWS = 150_000
# Requested checkpoints: over the checkpoints check's 10, with none timed.
CHECKPOINTS = 11


@pytest.fixture
def known_health(conn: psycopg.Connection) -> Iterator[None]:
    """A database whose health inputs the test knows: statistics reset, then one
    table of DEAD_ROWS dead tuples (dead_tuples: WARNING, -5) and CHECKPOINTS
    requested checkpoints (checkpoints: WARNING, -5); every other check OK, so the
    score is 100 - 5 - 5 = 90. The cluster-wide checks (connections, lock waits,
    idle and long transactions, wraparound) are quiet on the test cluster, and the
    coming months' partitions are made, as a scheduler keeps them."""
    conn.execute("SELECT count(*) FROM gl.ensure_partitions_ahead(3)")
    conn.execute("CREATE TABLE public.churn (id integer) WITH (autovacuum_enabled = false)")
    # Empty pages for the COPY below to fill: it then reads no block from disk,
    # and the cache hit ratio stays far above its 0.99 however many blocks the
    # health queries touch.
    conn.execute(f"INSERT INTO public.churn SELECT generate_series(1, {DEAD_ROWS})")
    conn.execute("DELETE FROM public.churn")
    conn.execute("VACUUM (TRUNCATE false) public.churn")
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_reset()")
    conn.execute("SELECT pg_stat_reset_shared('bgwriter')")
    try:
        for _ in range(CHECKPOINTS):
            conn.execute("CHECKPOINT")
        # Rows inserted by a transaction that rolls back are dead tuples.
        with conn.transaction(force_rollback=True), \
                conn.cursor().copy("COPY public.churn (id) FROM STDIN") as copy:
            copy.write("".join(f"{i}\n" for i in range(DEAD_ROWS)))
        conn.execute("SELECT pg_stat_force_next_flush()")
        yield
    finally:
        # Later tests see the checkpoint counters of a quiet cluster again.
        conn.execute("SELECT pg_stat_reset_shared('bgwriter')")


def test_health_checks_score_and_command(target, conn, known_health):
    checks = {c["check_name"]: c for c in conn.execute("SELECT * FROM batch.health_check")}
    assert set(checks) == {"connections", "cache_hit_ratio", "lock_waits",
                           "idle_in_transaction", "long_transactions", "bloat", "dead_tuples",
                           "xid_wraparound", "checkpoints", "temp_files",
                           "statement_statistics", "old_drafts", "partitions_premade"}
    assert all(c["status"] in STATUSES and c["detail"] and c["action"] for c in checks.values())
    not_ok = {name: (c["status"], c["penalty"])
              for name, c in checks.items() if c["status"] != "OK"}
    assert not_ok == {"dead_tuples": ("WARNING", 5), "checkpoints": ("WARNING", 5)}, checks
    assert checks["dead_tuples"]["value"] == "1"
    # At least ours (another run sharing the cluster may add some, or a timed one).
    requested, timed = map(int, re.fullmatch(r"(\d+) requested / (\d+) timed",
                                             checks["checkpoints"]["value"]).groups())
    assert requested >= CHECKPOINTS and timed < requested
    score = conn.execute("SELECT * FROM batch.health_score").fetchone()
    assert (score["score"], score["status"]) == (90, "WARNING")
    # Largest penalty first, then by name.
    assert [(r["check"], r["penalty"]) for r in score["reasons"]] == [
        ("checkpoints", 5), ("dead_tuples", 5)]

    connections = conn.execute("SELECT * FROM batch.health_connections").fetchall()
    assert sum(r["connections"] for r in connections) == connections[0]["connections_used"] >= 1
    cache = {r["scope"]: r for r in conn.execute("SELECT * FROM batch.health_cache")}
    assert {"database", "heap", "index"} <= set(cache)
    assert cache["database"]["object"] == conn.info.dbname

    result = json.loads(monthend_cli(target, "health", "--json", check=True).stdout)
    assert set(result) == {"score", "status", "reasons", "checks", "connections", "cache",
                           "lock_waits", "slow_statements", "bloat"}
    assert (result["score"], result["status"]) == (90, "WARNING")
    assert [r["check"] for r in result["reasons"]] == ["checkpoints", "dead_tuples"]
    assert result["lock_waits"] == []
    text = monthend_cli(target, "health")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("health 90/100 (WARNING)\n")
    assert "  WARNING  dead_tuples (-5): 1 tables with over 100,000 dead tuples" in text.stdout
    assert "connections:" in text.stdout and "lock waits: none" in text.stdout

    # The Prometheus export carries the same score and penalties.
    exported = {}
    for family in text_string_to_metric_families(monthend_cli(target, "metrics",
                                                              check=True).stdout):
        for sample in family.samples:
            exported.setdefault(sample.name, []).append(sample)
    assert [s.value for s in exported["monthend_health_score"]] == [90]
    assert {(s.labels["check"], s.labels["status"]): s.value
            for s in exported["monthend_health_check_penalty"] if s.value} == {
        ("checkpoints", "WARNING"): 5, ("dead_tuples", "WARNING"): 5}


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


def test_runner_reads_health_but_cannot_reset_or_end_sessions(target, conn, known_health):
    """The runner sees the score the DBA sees; the statistics behind it and other
    roles' sessions are not its to change."""
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as runner:
        runner.execute("SET ROLE monthend_runner")
        score = runner.execute("SELECT * FROM batch.health_score").fetchone()
        assert (score["score"], score["status"]) == (90, "WARNING")
        assert [r["check"] for r in score["reasons"]] == ["checkpoints", "dead_tuples"]
        churn = runner.execute("SELECT relation, kind FROM batch.health_bloat "
                               "WHERE relation = 'churn'").fetchall()
        assert churn == [{"relation": "churn", "kind": "table"}]
        for statement, message in [
                ("SELECT pg_stat_reset()", "permission denied for function pg_stat_reset"),
                (f"SELECT pg_terminate_backend({conn.info.backend_pid})",
                 "must be a superuser to terminate superuser process"),
                ("SELECT count(*) FROM public.churn", "permission denied for table churn")]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=message):
                runner.execute(statement)
    # Refused, not ignored: the DBA's session and the counters are as they were.
    assert conn.execute("SELECT score FROM batch.health_score").fetchone()["score"] == 90


def test_tune_prints_the_server_environment(target):
    text = monthend_cli(target, "tune", "--ram", "24GB", "--cores", "2", check=True).stdout
    document = json.loads(monthend_cli(target, "tune", "--ram", "24GB", "--cores", "2",
                                       "--json", check=True).stdout)
    assert document["server_environment"] == MALLOC_ENVIRONMENT
    for name, value in MALLOC_ENVIRONMENT.items():
        assert f"#   {name}={value}\n" in text


@pytest.mark.full
def test_embedded_server_runs_with_the_malloc_environment(private_cluster):
    """The thresholds reach the postmaster, and so every backend it forks."""
    pid = (private_cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for name, value in MALLOC_ENVIRONMENT.items():
        assert f"{name}={value}".encode() in environ
