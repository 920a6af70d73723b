"""Test fixtures: a real PostgreSQL cluster, a migrated template database, and a
fresh clone of it for every test.

The cluster is monthend's own embedded cluster code (the same that the CLI and
``make demo`` use), so it runs as the unprivileged ``postgres`` user when the
tests run as root. pytest-postgresql's noproc fixture then manages databases
on it: the template is migrated once per session and each test gets
``CREATE DATABASE ... TEMPLATE`` of it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pytest_postgresql import factories

from monthend import db, migrate
from monthend.embedded import TEST_SETTINGS, EmbeddedCluster, default_home

TEST_PORT = int(os.environ.get("MONTHEND_TEST_PORT", "54330"))
# One name per pytest process, so that several runs can share the cluster.
TEST_DBNAME = os.environ.get("MONTHEND_TEST_DB", f"monthend_test_{os.getpid()}")
TEST_CLUSTER = EmbeddedCluster(default_home() / "test-pgdata", TEST_PORT, TEST_SETTINGS,
                               dbname="monthend_test")


@pytest.fixture(scope="session")
def monthend_test_cluster() -> Iterator[EmbeddedCluster]:
    TEST_CLUSTER.start()
    yield TEST_CLUSTER


def load_schema(host: str, port: int, user: str, dbname: str, password: str | None,
                **_options: Any) -> None:
    """Migrate the template database once per session. The tests that close
    periods test the lifecycle, not the period-end entries: the template does
    not require a period-end before a close (tests/test_period_end*.py require
    it, as a fresh database does)."""
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, password=password,
                         autocommit=True) as conn:
        migrate.apply(conn, with_demo_tools=True)
        conn.execute("UPDATE gl.setting SET period_end_required = false")


server_databases = factories.postgresql_noproc(
    host="127.0.0.1", port=TEST_PORT, user="postgres", dbname=TEST_DBNAME,
    load=[load_schema])


@pytest.fixture(scope="session")
def postgresql_noproc(monthend_test_cluster, server_databases):
    """The migrated template on the running test cluster."""
    return server_databases


postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def target(postgresql: psycopg.Connection) -> db.Target:
    """A db.Target for this test's fresh database, as `--dsn` would give."""
    info = postgresql.info
    return db.Target(f"host={info.host} port={info.port} user={info.user} dbname={info.dbname}",
                     "--dsn")


@pytest.fixture
def conn(target: db.Target) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, rows as dicts."""
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def work_ranges(conn: psycopg.Connection, batch_id: int, worker: str = "test") -> int:
    """Claim and run, on this autocommit connection, every range of the
    batch's stage (pre-flight's while PREFLIGHTING, processing's while
    ALLOCATED), as one worker of the driver would; how many it ran."""
    done = 0
    while True:
        claim = conn.execute("CALL batch.claim_range(%s, %s, NULL, NULL, NULL)",
                             (batch_id, worker)).fetchone()
        range_id = claim["p_range_id"] if isinstance(claim, dict) else claim[0]
        if range_id is None:
            return done
        conn.execute("CALL batch.process_range(%s)", (range_id,))
        done += 1


def preflight_and_allocate(conn: psycopg.Connection, batch_id: int) -> None:
    """Pre-flight (its serial part, then its ranges) and allocation, by hand."""
    conn.execute("CALL batch.preflight(%s)", (batch_id,))
    work_ranges(conn, batch_id)
    conn.execute("CALL batch.allocate_ranges(%s)", (batch_id,))


def monthend_cli(target: db.Target, *args: str, timeout: float = 300,
                 check: bool = False, **popen: Any) -> subprocess.CompletedProcess[str]:
    """Run the real `monthend` command against the test database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k != "DATABASE_URL"}
    cmd = [sys.executable, "-m", "monthend.cli", "--dsn", target.conninfo, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, check=False, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"monthend {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def clean_fingerprint(postgresql_noproc: Any):
    """``clean_fingerprint(dataset, with_ids=True)``: the ledger fingerprint of an
    uninterrupted run of a faults.Dataset, run once per session in a database of
    its own, for comparing an interrupted and finished run with."""
    from faults import clean_run_fingerprint

    cache: dict[Any, dict[str, Any]] = {}

    def get(dataset: Any, with_ids: bool = True) -> dict[str, Any]:
        key = (dataset, with_ids)
        if key not in cache:
            cache[key] = clean_run_fingerprint(postgresql_noproc, dataset, with_ids=with_ids)
        return copy.deepcopy(cache[key])

    return get


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """A migrated cluster of this test's own, on its own port, which it may crash;
    stopped and removed afterwards."""
    from faults import private_cluster as make_private_cluster

    with make_private_cluster(tmp_path) as cluster:
        yield cluster
