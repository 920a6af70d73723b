"""The range workers a run opens: what was asked, bounded by the server's free
connections and by --max-connections, and said on stderr when fewer."""

from __future__ import annotations

import json

import psycopg

from conftest import monthend_cli
from monthend import db, runner


def test_max_connections_bounds_the_workers_and_says_so(target: db.Target,
                                                         conn: psycopg.Connection) -> None:
    monthend_cli(target, "generate", "--period", "2025-01", "--txns", "900", "--seed", "3",
                 check=True)
    proc = monthend_cli(target, "run", "--period", "2025-01", "--workers", "3",
                        "--range-size", "150", "--max-connections", "1", "--json", check=True)
    assert "running 1 range worker(s) of the 3 asked (free connections on the server" in \
        proc.stderr and "--max-connections 1)" in proc.stderr
    batch_id = json.loads(proc.stdout)["batch_id"]
    workers = conn.execute("SELECT count(DISTINCT worker) AS n, count(*) AS ranges "
                           "FROM batch.range WHERE batch_id = %s", (batch_id,)).fetchone()
    assert workers["n"] == 1 and workers["ranges"] > 3


def test_the_budget_never_exceeds_the_free_connections(target: db.Target,
                                                       conn: psycopg.Connection) -> None:
    budget = runner.worker_budget(target, 10_000)
    usable = conn.execute("SELECT current_setting('max_connections')::int "
                          "- current_setting('superuser_reserved_connections')::int AS n"
                          ).fetchone()["n"]
    assert 1 <= budget.granted < usable
    assert budget.granted == budget.limits["free connections on the server"]
    assert "of the 10000 asked" in str(budget.note())
    assert runner.worker_budget(target, 2).note() is None


def test_recorded_server_cores_bound_the_workers(target: db.Target,
                                                 conn: psycopg.Connection) -> None:
    conn.execute("UPDATE gl.setting SET server_cores = 2")
    budget = runner.worker_budget(target, 100)
    assert budget.granted == 2
    assert budget.limits["server cores less running workers"] == 2
    assert "running 2 range worker(s) of the 100 asked" in str(budget.note())
    # Workers already running on the server (here: one idle session named like
    # one, as `monthend work` from another host names its own) take their share.
    with psycopg.connect(target.conninfo, application_name="monthend otherhost/w1"):
        assert runner.worker_budget(target, 100).granted == 1
    conn.execute("UPDATE gl.setting SET server_cores = NULL")
    assert "server cores less running workers" not in runner.worker_budget(target, 100).limits
