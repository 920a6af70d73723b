"""Upgrading a database that an earlier release migrated and posted: afterwards it has
exactly the objects, definitions and privileges of a database migrated from scratch,
its earlier batches still verify, and it posts the next period."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import repo_root
from monthend import migrate

pytestmark = pytest.mark.full

# The last release whose SQL tree was laid out before objects moved to the folders
# of their kinds (and the generator to sql/demo): the upgrade that moves the most.
UPGRADE_FROM = "a9eb955"

# Every object with a digest of its definition; privileges compare as sets (the
# order of an ACL's items is only the order of the grants).
CATALOG = """
SELECT 'function' AS kind, p.oid::regprocedure::text AS name,
       md5(pg_get_functiondef(p.oid)) AS definition,
       (SELECT coalesce(string_agg(x::text, ',' ORDER BY x::text), '')
        FROM unnest(p.proacl) AS x) AS acl
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%(schemas)s)
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, c.oid::regclass::text,
       CASE c.relkind WHEN 'v' THEN md5(pg_get_viewdef(c.oid)) ELSE
           (SELECT md5(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                  || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                                  ', ' ORDER BY a.attnum))
            FROM pg_attribute AS a WHERE a.attrelid = c.oid AND a.attnum > 0
              AND NOT a.attisdropped) END,
       (SELECT coalesce(string_agg(x::text, ',' ORDER BY x::text), '')
        FROM unnest(c.relacl) AS x)
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
  AND c.relname NOT LIKE 'stage\\_%%'
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, md5(pg_get_triggerdef(t.oid)), ''
FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND NOT t.tgisinternal AND NOT c.relispartition
UNION ALL
SELECT 'migration', m.kind || ' ' || m.name, m.checksum, '' FROM batch.schema_migration AS m
ORDER BY 1, 2
"""
SCHEMAS = ["subledger", "gl", "batch", "audit"]


def catalog(dsn: str) -> dict[tuple[str, str], tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(CATALOG, {"schemas": SCHEMAS}).fetchall()
    return {(kind, name): (definition, acl) for kind, name, definition, acl in rows}


@pytest.fixture
def databases(monthend_test_cluster) -> Iterator[tuple[str, str]]:
    names = [f"monthend_upgraded_{os.getpid()}", f"monthend_fresh_{os.getpid()}"]
    admin = monthend_test_cluster.dsn("postgres")

    def drop_all(conn: psycopg.Connection) -> None:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    with psycopg.connect(admin, autocommit=True) as conn:
        drop_all(conn)
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield tuple(monthend_test_cluster.dsn(name) for name in names)
    with psycopg.connect(admin, autocommit=True) as conn:
        drop_all(conn)


@pytest.fixture
def earlier_release(tmp_path: Path) -> Path:
    """The earlier release's tree, from this repository's history."""
    archive = tmp_path / "earlier.tar"
    proc = subprocess.run(["git", "-C", str(repo_root()), "archive", "-o", str(archive),
                           UPGRADE_FROM], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"release {UPGRADE_FROM} is not in this clone's history: {proc.stderr}")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "earlier", filter="data")
    return tmp_path / "earlier"


def earlier_cli(tree: Path, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")
           and k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(tree / "driver")
    proc = subprocess.run([sys.executable, "-m", "monthend.cli", "--dsn", dsn, *args],
                          cwd=tree, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600, check=False)
    assert proc.returncode == 0, f"earlier release: {args} exited {proc.returncode}\n" \
                                 f"{proc.stdout}\n{proc.stderr}"
    return proc


def test_upgrade_equals_a_fresh_migration_and_keeps_posting(
        databases: tuple[str, str], earlier_release: Path) -> None:
    upgraded, fresh = databases
    earlier_cli(earlier_release, upgraded, "migrate")
    earlier_cli(earlier_release, upgraded, "generate", "--period", "2025-01", "--txns", "2000")
    first = json.loads(earlier_cli(earlier_release, upgraded, "run", "--period", "2025-01",
                                   "--json").stdout)
    assert first["status"] == "COMMITTED"

    for dsn in (upgraded, fresh):
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate.apply(conn, with_demo_tools=True)

    before, after = catalog(fresh), catalog(upgraded)
    missing = sorted(set(before) - set(after))
    extra = sorted(set(after) - set(before))
    differ = sorted(key for key in set(before) & set(after) if before[key] != after[key])
    assert (missing, extra, differ) == ([], [], [])

    with psycopg.connect(upgraded, autocommit=True) as conn:
        # The earlier batch verifies under today's functions, and the next period posts.
        assert conn.execute("SELECT count(*) FROM audit.verify_batch(%s)",
                            (first["batch_id"],)).fetchone()[0] == 0
        conn.execute("CALL subledger.generate_transactions('2025-02', 2000, 0, 1, "
                     "NULL, NULL, NULL)")
    from conftest import monthend_cli
    from monthend import db

    target = db.Target(upgraded, "--dsn")
    second = json.loads(monthend_cli(target, "run", "--period", "2025-02", "--json",
                                     check=True).stdout)
    assert second["status"] == "COMMITTED"
    verified = json.loads(monthend_cli(target, "verify", "--json", check=True).stdout)
    assert verified["ok"] is True, verified
