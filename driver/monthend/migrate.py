"""Schema migrations: versioned files applied once, repeatable objects re-applied on change.

Versioned files (``sql/migrations/V001__name.sql``) are forward-only: each runs in its
own transaction together with the insert of its version row, and an applied file that
was later edited is refused. Repeatable files (functions, procedures, views,
triggers; ``.sql`` or jinja2 ``.sql.j2``) use ``CREATE OR REPLACE`` and carry their
own GRANTs, so re-applying one keeps its privileges; each is re-applied, in its own
transaction, when its rendered text changes.

Every file is parsed with pglast (SQL, and the PL/pgSQL bodies) before anything
touches the database: one syntax error anywhere applies nothing.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pglast
from pglast import parser as pg_parser
from psycopg import Connection
from psycopg.rows import tuple_row

from monthend.errors import MigrationError
from monthend.resources import schema_root

VERSIONED_DIR = "sql/migrations"
# Dependency order: functions, the views over them, the partition and staging
# functions, the run's procedures, the audit schema. An object whose dependency
# comes later in this order is retried once the rest is applied.
REPEATABLE_DIRS = ("sql/functions", "sql/views", "partitions", "procedures", "audit")
# Test and demo tooling (the synthetic-data generator): applied only when asked,
# never part of a production schema.
DEMO_TOOLS_DIR = "sql/demo"
VERSIONED_NAME = re.compile(r"^V(\d{3,})__[a-z0-9_]+\.sql$")
OWNER_ROLE = "monthend_owner"
# undefined_table, undefined_function, undefined_object, undefined_column
MISSING_DEPENDENCY_SQLSTATES = {"42P01", "42883", "42704", "42703"}

BOOTSTRAP_SQL = """
CREATE SCHEMA IF NOT EXISTS batch;
CREATE TABLE IF NOT EXISTS batch.schema_migration (
    kind         text        NOT NULL CHECK (kind IN ('versioned', 'repeatable')),
    name         text        NOT NULL,
    checksum     text        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by   text        NOT NULL DEFAULT session_user,
    execution_ms integer     NOT NULL,
    CONSTRAINT schema_migration_pkey PRIMARY KEY (kind, name)
)
"""


@dataclass(frozen=True)
class Statement:
    text: str
    line: int


@dataclass
class MigrationFile:
    kind: str
    name: str
    path: Path
    text: str
    statements: list[Statement] = field(default_factory=list)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass
class Plan:
    versioned: list[MigrationFile]
    repeatable: list[MigrationFile]
    applied: dict[tuple[str, str], str]
    # Repeatable files recorded as applied that this release no longer ships
    # (moved or removed): their records are dropped when the plan is applied.
    retired: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[MigrationFile]:
        return self.versioned + self.repeatable


def _render(path: Path, root: Path) -> str:
    if not path.name.endswith(".j2"):
        return path.read_text()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(path.relative_to(root).as_posix()).render()


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def parse_file(mfile: MigrationFile) -> None:
    """Split a file into statements with pglast; raise MigrationError naming file and line."""
    text = mfile.text
    try:
        pg_parser.parse_sql(text)
    except pg_parser.ParseError as exc:
        message, offset = exc.args[0], exc.args[1] if len(exc.args) > 1 else None
        line = _line_of(text, offset) if offset is not None else "?"
        raise MigrationError(f"{mfile.name}:{line}: {message}. Nothing was applied.") from exc
    statements = []
    search_from = 0
    for stmt in pg_parser.split(text, with_parser=True):
        start = text.find(stmt, search_from)
        line = _line_of(text, start if start >= 0 else search_from)
        if start >= 0:
            search_from = start + len(stmt)
        statements.append(Statement(stmt, line))
        if re.search(r"\bLANGUAGE\s+plpgsql\b", stmt, re.IGNORECASE) and re.match(
            r"\s*CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\b", stmt, re.IGNORECASE
        ):
            try:
                pglast.parse_plpgsql(stmt)
            except pg_parser.ParseError as exc:
                raise MigrationError(
                    f"{mfile.name}:{line}: PL/pgSQL body: {exc.args[0]}. Nothing was applied."
                ) from exc
    mfile.statements = statements


def repeatable_folders(with_demo_tools: bool = False) -> tuple[str, ...]:
    return REPEATABLE_DIRS + ((DEMO_TOOLS_DIR,) if with_demo_tools else ())


def shipped_repeatable_names(root: Path | None = None) -> set[str]:
    """Every repeatable file this release ships, the demo tools included."""
    root = root or schema_root()
    return {path.relative_to(root).as_posix()
            for folder in repeatable_folders(with_demo_tools=True)
            for path in (root / folder).glob("*.sql*")
            if not path.name.startswith("_") and path.name.endswith((".sql", ".sql.j2"))}


def schema_version(names: Iterable[str]) -> str | None:
    """The schema version of a set of versioned files: the highest, as ``V013``."""
    numbers = [int(m.group(1)) for m in map(VERSIONED_NAME.match, names) if m]
    return f"V{max(numbers):03d}" if numbers else None


def shipped_schema_version(root: Path | None = None) -> str | None:
    root = root or schema_root()
    return schema_version(p.name for p in (root / VERSIONED_DIR).glob("*.sql"))


def applied_schema_version(conn: Connection) -> str | None:
    return schema_version(name for (kind, name) in applied_checksums(conn)
                          if kind == "versioned")


def load_files(root: Path | None = None, with_demo_tools: bool = False,
               ) -> tuple[list[MigrationFile], list[MigrationFile]]:
    """Read, render and parse every migration file under ``root``."""
    root = root or schema_root()
    versioned_dir = root / VERSIONED_DIR
    if not versioned_dir.is_dir():
        raise MigrationError(f"No migrations found: {versioned_dir} does not exist.")
    versioned = []
    for path in sorted(versioned_dir.glob("*.sql")):
        if not VERSIONED_NAME.match(path.name):
            raise MigrationError(
                f"{path.relative_to(root)}: versioned migrations are named V001__what.sql."
            )
        versioned.append(MigrationFile("versioned", path.name, path, path.read_text()))
    numbers = [int(VERSIONED_NAME.match(f.name).group(1)) for f in versioned]
    if len(set(numbers)) != len(numbers):
        raise MigrationError("Two versioned migrations share a version number.")
    repeatable = []
    for folder in repeatable_folders(with_demo_tools):
        for path in sorted((root / folder).glob("*.sql*")):
            if path.name.startswith("_") or not path.name.endswith((".sql", ".sql.j2")):
                continue
            name = path.relative_to(root).as_posix()
            try:
                text = _render(path, root)
            except jinja2.TemplateError as exc:
                raise MigrationError(
                    f"{name}: template error: {exc}. Nothing was applied."
                ) from exc
            repeatable.append(MigrationFile("repeatable", name, path, text))
    for mfile in versioned + repeatable:
        parse_file(mfile)
    return versioned, repeatable


def _rows(conn: Connection, sql: str, params: tuple | None = None) -> list[tuple]:
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _bootstrap(conn: Connection) -> None:
    with conn.transaction():
        for stmt in pg_parser.split(BOOTSTRAP_SQL):
            conn.execute(stmt)


def applied_checksums(conn: Connection) -> dict[tuple[str, str], str]:
    exists = _rows(conn, "SELECT to_regclass('batch.schema_migration')")[0][0]
    if exists is None:
        return {}
    rows = _rows(conn, "SELECT kind, name, checksum FROM batch.schema_migration")
    return {(kind, name): checksum for kind, name, checksum in rows}


def plan(conn: Connection, root: Path | None = None, with_demo_tools: bool = False) -> Plan:
    """What ``apply`` would do; refuses edited or unknown versioned migrations."""
    versioned, repeatable = load_files(root, with_demo_tools)
    applied = applied_checksums(conn)
    on_disk = {f.name for f in versioned}
    for (kind, name), _checksum in applied.items():
        if kind == "versioned" and name not in on_disk:
            raise MigrationError(
                f"The database has migration {name} applied, which this copy of monthend "
                "does not have. Upgrade monthend to the release that ships it."
            )
    pending_versioned = []
    for mfile in versioned:
        known = applied.get(("versioned", mfile.name))
        if known is None:
            pending_versioned.append(mfile)
        elif known != mfile.checksum:
            raise MigrationError(
                f"{VERSIONED_DIR}/{mfile.name} was edited after it was applied "
                f"(applied checksum {known[:12]}, file now {mfile.checksum[:12]}). Versioned "
                "migrations are never edited: restore the file and put the change in a new "
                "migration."
            )
    pending_repeatable = [
        f for f in repeatable if applied.get(("repeatable", f.name)) != f.checksum
    ]
    shipped = shipped_repeatable_names(root)
    retired = sorted(name for (kind, name) in applied
                     if kind == "repeatable" and name not in shipped)
    return Plan(pending_versioned, pending_repeatable, applied, retired)


def _apply_one(conn: Connection, mfile: MigrationFile) -> None:
    started = time.monotonic()
    with conn.transaction():
        # Only once this database's schemas belong to the owner: the roles are
        # cluster-wide, so they may predate this database, and the first file
        # must run as the migrating user (it grants that user the owner role).
        owner = _rows(
            conn,
            "SELECT pg_has_role(current_user, r.oid, 'MEMBER') AND n.nspowner = r.oid "
            "FROM pg_roles AS r JOIN pg_namespace AS n ON n.nspname = 'batch' "
            "WHERE r.rolname = %s",
            (OWNER_ROLE,),
        )
        if owner and owner[0][0]:
            conn.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
        for stmt in mfile.statements:
            try:
                conn.execute(stmt.text)
            except Exception as exc:
                raise MigrationError(
                    f"{mfile.name}:{stmt.line}: {str(exc).strip()}. This file was rolled back; "
                    "files before it stay applied."
                ) from exc
        elapsed_ms = int((time.monotonic() - started) * 1000)
        conn.execute(
            """
            INSERT INTO batch.schema_migration (kind, name, checksum, execution_ms)
            VALUES (%(kind)s, %(name)s, %(checksum)s, %(ms)s)
            ON CONFLICT (kind, name) DO UPDATE
               SET checksum = EXCLUDED.checksum, applied_at = clock_timestamp(),
                   applied_by = session_user, execution_ms = EXCLUDED.execution_ms
            """,
            {"kind": mfile.kind, "name": mfile.name, "checksum": mfile.checksum,
             "ms": elapsed_ms},
        )
        conn.execute("RESET ROLE")


def _record_in_audit_chain(conn: Connection, applied: list[MigrationFile]) -> None:
    """Append one MIGRATION_APPLIED event a file, once the audit chain exists."""
    ready = _rows(conn, "SELECT to_regprocedure('audit.append(text,jsonb)') IS NOT NULL "
                        "AND EXISTS (SELECT FROM pg_trigger WHERE tgname = 'log_link')")
    if not applied or not ready[0][0]:
        return
    with conn.transaction():
        for mfile in applied:
            conn.execute(
                "SELECT audit.append('MIGRATION_APPLIED', jsonb_build_object("
                "'kind', %s::text, 'name', %s::text, 'checksum', %s::text))",
                (mfile.kind, mfile.name, mfile.checksum),
            )


def apply(conn: Connection, root: Path | None = None,
          progress: callable | None = None,
          with_demo_tools: bool = False) -> list[MigrationFile]:
    """Apply what is pending; a second call applies nothing. ``conn`` must be autocommit.
    ``with_demo_tools`` also applies the synthetic-data generator (sql/demo)."""
    # Plan (which parses every file) before the bootstrap writes anything: a
    # file that does not parse leaves even an empty database untouched.
    the_plan = plan(conn, root, with_demo_tools)
    _bootstrap(conn)
    done: list[MigrationFile] = []
    try:
        _apply_all(conn, the_plan, done, progress)
    finally:
        _record_in_audit_chain(conn, done)
    _forget_retired(conn, the_plan.retired)
    return done


def _forget_retired(conn: Connection, names: list[str]) -> None:
    """Drop the records of repeatable files this release no longer ships. The
    objects they made were moved to another file (re-applied under its name) or
    dropped by a versioned migration."""
    if not names:
        return
    with conn.transaction():
        conn.execute("DELETE FROM batch.schema_migration "
                     "WHERE kind = 'repeatable' AND name = ANY(%s)", (names,))


def _apply_all(conn: Connection, the_plan: Plan, done: list[MigrationFile],
               progress: callable | None) -> None:
    for mfile in the_plan.versioned:
        if progress:
            progress(mfile)
        _apply_one(conn, mfile)
        done.append(mfile)
    # Repeatable objects may depend on each other (a view on a view). Folder
    # order covers most of it; an object whose dependency is not there yet is
    # retried after the others, until a pass makes no progress.
    queue = list(the_plan.repeatable)
    while queue:
        postponed: list[tuple[MigrationFile, MigrationError]] = []
        for mfile in queue:
            if progress:
                progress(mfile)
            try:
                _apply_one(conn, mfile)
            except MigrationError as exc:
                if getattr(exc.__cause__, "sqlstate", None) not in MISSING_DEPENDENCY_SQLSTATES:
                    raise
                postponed.append((mfile, exc))
                continue
            done.append(mfile)
        if len(postponed) == len(queue):
            raise postponed[0][1]
        queue = [mfile for mfile, _exc in postponed]


def describe(files: Iterable[MigrationFile]) -> list[dict[str, str]]:
    return [{"kind": f.kind, "name": f.name, "checksum": f.checksum[:12]} for f in files]
