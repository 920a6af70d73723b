"""What the audit tests share: sessions as the auditor role, and tampering as
only a superuser can (the refusing triggers switched off)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from monthend import db

AUDITOR = "monthend_auditor"


def role_target(target: db.Target, role: str) -> db.Target:
    """The same database, every session of the CLI taking ``role``."""
    return db.Target(f"{target.conninfo} options='-c role={role}'", "--dsn")


@contextmanager
def auditor(target: db.Target) -> Iterator[psycopg.Connection]:
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as session:
        session.execute(f"SET ROLE {AUDITOR}")
        yield session


def tamper(conn: psycopg.Connection, *statements: str, params: Any = None) -> None:
    """Run statements as the superuser with the refusing triggers switched off."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            conn.execute(statement, params)


@contextmanager
def sealing_by(conn: psycopg.Connection, version: int) -> Iterator[None]:
    """Batches started inside are sealed by ``version``. Version 1 batches are the
    ones an earlier release made; the column's default stands in for it."""
    conn.execute(sql.SQL("ALTER TABLE batch.run ALTER COLUMN seal_version SET DEFAULT {}")
                 .format(sql.Literal(version)))
    try:
        yield
    finally:
        conn.execute("ALTER TABLE batch.run ALTER COLUMN seal_version SET DEFAULT 2")
