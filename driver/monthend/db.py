"""The one module that owns database connections.

Where to connect: ``--dsn``, else ``DATABASE_URL``, else libpq's ``PG*`` variables
and service file, else the embedded local cluster (started on demand). Database
errors are mapped here, by SQLSTATE, to the project's exceptions, so the CLI
prints a message a person can act on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from monthend.embedded import EmbeddedCluster
from monthend.errors import ConfigurationError, MonthendError, RunConflict, RunFailed
from monthend.queries import query

PG_ENV_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
APPLICATION_NAME = "monthend"

# SQLSTATE classes and codes that mean "the user must change something".
USAGE_SQLSTATES = {
    "22023",  # invalid_parameter_value: bad period, bad arguments
    "55000",  # object_not_in_prerequisite_state: wrong batch status for the command
    "02000",  # no_data
    "P0002",  # no_data_found (PL/pgSQL): no such batch
    "42501",  # insufficient_privilege
    "3D000",  # invalid_catalog_name: no such database
    "28000",  # invalid_authorization_specification
    "28P01",  # invalid_password
}
CONFLICT_SQLSTATES = {"55P03"}  # lock_not_available: the period has an unfinished batch


@dataclass(frozen=True)
class Target:
    """Where to connect and how the user asked for it."""

    conninfo: str
    source: str  # "--dsn", "DATABASE_URL", "PG* environment", "embedded"
    embedded: EmbeddedCluster | None = None

    def describe(self) -> str:
        if self.embedded:
            return (f"embedded cluster at {self.embedded.data_dir} "
                    f"(127.0.0.1:{self.embedded.port}, database {self.embedded.dbname})")
        return f"database from {self.source}"


def resolve_target(dsn: str | None) -> Target:
    if dsn:
        return Target(dsn, "--dsn")
    if os.environ.get("DATABASE_URL"):
        return Target(os.environ["DATABASE_URL"], "DATABASE_URL")
    if any(os.environ.get(var) for var in PG_ENV_VARS):
        return Target("", "PG* environment")
    cluster = EmbeddedCluster.default()
    return Target(cluster.dsn(), "embedded", cluster)


def ensure_started(target: Target, announce: bool = True) -> None:
    """Start the embedded cluster if that is the target; say where it is."""
    if target.embedded is None:
        return
    started = target.embedded.start()
    target.embedded.ensure_database()
    if started and announce:
        print(f"monthend: started the embedded PostgreSQL cluster in {target.embedded.data_dir} "
              f"on 127.0.0.1:{target.embedded.port}; stop it with `monthend db stop`.",
              file=sys.stderr)


def map_error(exc: psycopg.Error) -> MonthendError:
    """Turn a database error into the project's exception with an actionable message."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None) or ""
    primary = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    hint = diag.message_hint if diag and diag.message_hint else None
    message = primary + (f"\n{hint}" if hint else "")
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        return ConfigurationError(
            f"cannot connect to the database: {primary}\nCheck --dsn, DATABASE_URL or the PG* "
            "variables, or unset them all to use the embedded cluster."
        )
    if sqlstate in CONFLICT_SQLSTATES:
        return RunConflict(message)
    if sqlstate in USAGE_SQLSTATES:
        return ConfigurationError(message)
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedFunction):
        return ConfigurationError(f"{primary}\nThe schema is missing or outdated: run "
                                  "`monthend migrate` (or `make migrate`).")
    return RunFailed(message)


@contextlib.contextmanager
def wrap_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise map_error(exc) from exc


def connect(target: Target, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection:
    with wrap_errors():
        return psycopg.connect(target.conninfo, autocommit=autocommit, row_factory=dict_row,
                               application_name=kwargs.pop("application_name", APPLICATION_NAME),
                               **kwargs)


def call(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run a named query; return its rows (empty for a CALL without OUT parameters)."""
    with wrap_errors():
        cur = conn.execute(query(name), params)
        return cur.fetchall() if cur.description else []


def call_one(conn: psycopg.Connection, name: str, **params: Any) -> dict[str, Any] | None:
    rows = call(conn, name, **params)
    return rows[0] if rows else None


def generate_transactions(conn: psycopg.Connection, **params: Any) -> dict[str, Any]:
    """Synthetic source rows for a period, by the generator that only test and demo
    databases have; a database without it gets told how to add it."""
    if not call_one(conn, "demo_tools_installed")["installed"]:
        raise ConfigurationError(
            "This database has no synthetic-data generator: it is test and demo tooling, "
            "installed only on request. Run `monthend migrate --with-demo-data-tools` "
            "first (never needed in production).")
    return call_one(conn, "generate_transactions", **params) or {}
