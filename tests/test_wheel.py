"""The package a DBA deploys: the wheel, installed into a fresh virtual environment
outside the checkout, migrates an empty database, generates, runs and verifies a
period with nothing from the checkout on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import repo_root
from monthend import __version__, migrate

pytestmark = pytest.mark.full

PERIOD = "2025-03"


def _run(cmd: list[str], cwd: Path, env: dict[str, str],
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, check=False)


def _checked(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (f"{proc.args} exited {proc.returncode}:\n"
                                  f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A venv outside the checkout with the freshly built wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "PYTHON", "VIRTUAL_ENV", "MONTHEND"))
           and k != "DATABASE_URL"}
    env["MONTHEND_HOME"] = str(work / "home")
    _checked(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                   "--wheel-dir", str(work / "dist"), str(repo_root())], work, env))
    wheels = list((work / "dist").glob("monthend-*.whl"))
    assert len(wheels) == 1, wheels
    _checked(_run([sys.executable, "-m", "venv", str(work / "venv")], work, env))
    _checked(_run([str(work / "venv" / "bin" / "pip"), "install", "--quiet", str(wheels[0])],
                  work, env))
    yield work, env


@pytest.fixture
def empty_database(monthend_test_cluster) -> Iterator[str]:
    """A database with nothing in it, on the test cluster; dropped afterwards."""
    name = f"monthend_wheel_{os.getpid()}"
    admin = monthend_test_cluster.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield monthend_test_cluster.dsn(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def test_wheel_migrates_runs_and_verifies_outside_the_checkout(
        installed: tuple[Path, dict[str, str]], empty_database: str) -> None:
    work, env = installed
    python = str(work / "venv" / "bin" / "python")
    monthend = [str(work / "venv" / "bin" / "monthend"), "--dsn", empty_database]

    # The package and its SQL tree come from the venv, not from the checkout.
    where = _checked(_run([python, "-c",
                           "import monthend, monthend.resources as r; "
                           "print(monthend.__file__); print(r.checkout_root()); "
                           "print(r.schema_root()); print(r.default_home())"], work, env))
    module, checkout, schema, home = where.stdout.split("\n")[:4]
    assert module.startswith(str(work / "venv")), module
    assert checkout == "None"
    assert schema.startswith(str(work / "venv")) and schema.endswith("monthend/schema"), schema
    assert home == str(work / "home")

    version = _checked(_run([*monthend, "--version"], work, env)).stdout
    shipped = migrate.shipped_schema_version(repo_root())
    assert version.splitlines()[0] == f"monthend {__version__}, schema {shipped}"
    assert "database: schema none" in version

    # A production migrate leaves the generator out, and generate says how to add it.
    _checked(_run([*monthend, "migrate"], work, env))
    refused = _run([*monthend, "generate", "--period", PERIOD, "--txns", "10"], work, env)
    assert refused.returncode == 2, refused.stderr
    assert "monthend migrate --with-demo-data-tools" in refused.stderr
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM subledger.premium_transaction"
                            ).fetchone()[0] == 0

    _checked(_run([*monthend, "migrate", "--with-demo-data-tools"], work, env))
    assert f"database: schema {shipped}" in _checked(
        _run([*monthend, "--version"], work, env)).stdout
    _checked(_run([*monthend, "generate", "--period", PERIOD, "--txns", "3000",
                   "--bad-rows", "0.01"], work, env))
    run = json.loads(_checked(_run([*monthend, "run", "--period", PERIOD, "--workers", "2",
                                    "--json"], work, env)).stdout)
    assert run["status"] == "COMMITTED"
    assert run["posted_rows"] + run["dead_letter_rows"] == 3000
    assert run["journal_entries"] == 3 * run["posted_rows"]
    verified = json.loads(_checked(_run([*monthend, "verify", "--json"], work, env)).stdout)
    assert verified["ok"] is True, verified
