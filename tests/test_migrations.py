"""Migrations: from scratch on an empty database, idempotent, `--status` and
`--dry-run` for DBAs, edited versioned files and syntax errors refused before
anything is applied, changed repeatable objects re-applied with their grants.

Tests that alter SQL files work on a scratch copy of the repository's SQL tree
(``migrate.apply(conn, root=...)``); the repository's own files are never touched.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row, tuple_row

from conftest import monthend_cli, repo_root
from monthend import db, migrate
from monthend.errors import MigrationError

SQL_TREE = ("sql", "procedures", "partitions", "audit")
PROJECT_SCHEMAS = ("subledger", "gl", "batch", "audit")
START_RUN = "procedures/start_run.sql"
START_RUN_SIGNATURE = "batch.start_run(text,integer,integer,integer,bigint,text)"
VERIFY_CHAIN = "audit/verify_chain.sql"


# --------------------------------------------------------------------------- fixtures


def _conninfo(server: Any, dbname: str) -> str:
    info = f"host={server.host} port={server.port} user={server.user} dbname={dbname}"
    return info + (f" password={server.password}" if server.password else "")


@pytest.fixture
def empty_db(postgresql_noproc: Any) -> Iterator[db.Target]:
    """A brand-new database on the test cluster that nothing has migrated."""
    name = f"monthend_empty_{uuid.uuid4().hex[:12]}"
    admin = _conninfo(postgresql_noproc, postgresql_noproc.maintenance_dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield db.Target(_conninfo(postgresql_noproc, name), "--dsn")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_conn(empty_db: db.Target) -> Iterator[psycopg.Connection]:
    with psycopg.connect(empty_db.conninfo, autocommit=True) as connection:
        yield connection


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    """A copy of the repository's SQL tree that a test may edit."""
    root = tmp_path / "monthend"
    for folder in SQL_TREE:
        shutil.copytree(repo_root() / folder, root / folder)
    return root


@pytest.fixture
def migrated_conn(conn: psycopg.Connection, scratch_root: Path) -> psycopg.Connection:
    """The test's clone of the migrated template, brought level with ``scratch_root``
    (the template was migrated when the session started; the tree may have moved)."""
    migrate.apply(conn, root=scratch_root)
    assert migrate.apply(conn, root=scratch_root) == []
    return conn


# --------------------------------------------------------------------------- helpers


def _edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert old in text, f"{name} no longer contains {old!r}; update the test"
    path.write_text(text.replace(old, new, 1))


def _line_of(root: Path, name: str, needle: str) -> int:
    for number, line in enumerate((root / name).read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {name}")


def _rows(conn: psycopg.Connection, sql: str, params: Any = None) -> list[tuple]:
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _value(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    return _rows(conn, sql, params)[0][0]


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Everything a migration could change: schemas, relations and their columns,
    routines with their bodies and privileges, and the migration history."""
    user_ns = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
               "AND n.nspname !~ '^pg_(toast|temp)'")
    state = {
        "schemas": _rows(conn, f"SELECT n.nspname, n.nspowner::regrole::text "
                               f"FROM pg_namespace AS n WHERE {user_ns} ORDER BY 1"),
        "columns": _rows(conn, f"""
            SELECT n.nspname, c.relname, c.relkind, c.relacl::text, a.attname,
                   format_type(a.atttypid, a.atttypmod)
            FROM pg_class AS c
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            LEFT JOIN pg_attribute AS a
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE {user_ns} ORDER BY 1, 2, 5"""),
        "routines": _rows(conn, f"""
            SELECT p.oid::regprocedure::text, md5(coalesce(p.prosrc, '')
                   || coalesce(p.prosqlbody::text, '')), p.proacl::text
            FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
            WHERE {user_ns} ORDER BY 1"""),
        "triggers": _rows(conn, "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
                                "WHERE NOT tgisinternal ORDER BY 1, 2"),
        "history": [],
        "audit_log": [],
    }
    if _value(conn, "SELECT to_regclass('batch.schema_migration')") is not None:
        state["history"] = _rows(conn, "SELECT kind, name, checksum, applied_at "
                                       "FROM batch.schema_migration ORDER BY 1, 2")
    if _value(conn, "SELECT to_regclass('audit.log')") is not None:
        state["audit_log"] = _rows(conn, "SELECT seq, event, hash FROM audit.log ORDER BY seq")
    return state


def _project_schemas(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in _rows(conn, "SELECT nspname FROM pg_namespace "
                                      "WHERE nspname = ANY(%s) ORDER BY 1",
                                (list(PROJECT_SCHEMAS),))]


def _all_files(root: Path | None = None) -> list[str]:
    versioned, repeatable = migrate.load_files(root)
    return [f.name for f in versioned + repeatable]


def _checksum(conn: psycopg.Connection, kind: str, name: str) -> str:
    return _value(conn, "SELECT checksum FROM batch.schema_migration "
                        "WHERE kind = %s AND name = %s", (kind, name))


def _set_checksum(conn: psycopg.Connection, kind: str, name: str, checksum: str) -> None:
    """Make the recorded history disagree with a file, as an edit of the file would."""
    with conn.cursor() as cur:
        cur.execute("UPDATE batch.schema_migration SET checksum = %s "
                    "WHERE kind = %s AND name = %s", (checksum, kind, name))
        assert cur.rowcount == 1, f"{kind} {name} is not in batch.schema_migration"


# --------------------------------------------------------------------------- from scratch


def test_apply_from_scratch_then_again_is_a_no_op(empty_conn: psycopg.Connection) -> None:
    applied = migrate.apply(empty_conn)
    # Versioned files run in order; repeatable ones may be reordered by their dependencies.
    assert [f.name for f in applied if f.kind == "versioned"] == [
        name for name in _all_files() if name.startswith("V")]
    assert sorted(f.name for f in applied) == sorted(_all_files())
    assert _project_schemas(empty_conn) == sorted(PROJECT_SCHEMAS)
    history = _rows(empty_conn, "SELECT kind, name FROM batch.schema_migration ORDER BY 1, 2")
    assert sorted(history) == sorted((f.kind, f.name) for f in applied)
    # Each applied file is an event in the audit chain.
    assert _value(empty_conn, "SELECT count(*) FROM audit.log "
                              "WHERE event = 'MIGRATION_APPLIED'") == len(applied)

    before = snapshot(empty_conn)
    assert migrate.apply(empty_conn) == []
    assert snapshot(empty_conn) == before


def test_objects_migrated_from_scratch_belong_to_the_owner(
        empty_conn: psycopg.Connection) -> None:
    migrate.apply(empty_conn)
    not_owned = _rows(empty_conn, """
        SELECT 'schema ' || n.nspname FROM pg_namespace AS n
        WHERE n.nspname = ANY(%(schemas)s) AND n.nspowner <> 'monthend_owner'::regrole
        UNION ALL
        SELECT 'relation ' || c.oid::regclass::text FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND c.relowner <> 'monthend_owner'::regrole
        UNION ALL
        SELECT 'routine ' || p.oid::regprocedure::text FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s) AND p.proowner <> 'monthend_owner'::regrole
        ORDER BY 1""", {"schemas": list(PROJECT_SCHEMAS)})
    assert not_owned == []


def test_migrated_template_has_nothing_pending(migrated_conn: psycopg.Connection,
                                               scratch_root: Path) -> None:
    before = snapshot(migrated_conn)
    assert migrate.plan(migrated_conn, scratch_root).pending == []
    assert migrate.apply(migrated_conn, root=scratch_root) == []
    assert snapshot(migrated_conn) == before


# --------------------------------------------------------------------------- CLI


def test_status_exits_0_when_up_to_date(target: db.Target) -> None:
    # The clone may trail the working tree if a file changed since the session began.
    monthend_cli(target, "migrate", check=True)
    proc = monthend_cli(target, "migrate", "--status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout
    proc = monthend_cli(target, "migrate", "--status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == {"pending": []}


def test_status_lists_pending_and_exits_nonzero(empty_db: db.Target,
                                                empty_conn: psycopg.Connection) -> None:
    before = snapshot(empty_conn)
    proc = monthend_cli(empty_db, "migrate", "--status")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    listed = re.findall(r"^pending\s+(versioned|repeatable)\s+(\S+)$", proc.stdout, re.M)
    assert [name for _kind, name in listed] == _all_files()
    assert ("versioned", "V001__roles_and_schemas.sql") in listed

    proc = monthend_cli(empty_db, "migrate", "--status", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    pending = json.loads(proc.stdout)["pending"]
    assert [p["name"] for p in pending] == _all_files()
    assert snapshot(empty_conn) == before


def test_status_lists_a_changed_repeatable(target: db.Target, conn: psycopg.Connection) -> None:
    monthend_cli(target, "migrate", check=True)
    _set_checksum(conn, "repeatable", START_RUN, "stale")
    proc = monthend_cli(target, "migrate", "--status")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.findall(r"^pending\s+(\S+)\s+(\S+)$", proc.stdout, re.M) == [
        ("repeatable", START_RUN)]


def test_dry_run_on_empty_database_applies_nothing(empty_db: db.Target,
                                                   empty_conn: psycopg.Connection) -> None:
    before = snapshot(empty_conn)
    proc = monthend_cli(empty_db, "migrate", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = re.findall(r"^pending\s+\S+\s+(\S+)$", proc.stdout, re.M)
    assert listed == _all_files()
    assert snapshot(empty_conn) == before
    assert _project_schemas(empty_conn) == []

    proc = monthend_cli(empty_db, "migrate", "--dry-run", "--show-sql")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CREATE TABLE gl.account" in proc.stdout
    assert "CREATE OR REPLACE PROCEDURE batch.start_run" in proc.stdout
    assert snapshot(empty_conn) == before


def test_dry_run_lists_only_what_changed_and_applies_nothing(
        target: db.Target, conn: psycopg.Connection) -> None:
    monthend_cli(target, "migrate", check=True)
    _set_checksum(conn, "repeatable", START_RUN, "stale")
    before = snapshot(conn)

    proc = monthend_cli(target, "migrate", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p["name"] for p in json.loads(proc.stdout)["pending"]] == [START_RUN]
    assert snapshot(conn) == before
    assert _checksum(conn, "repeatable", START_RUN) == "stale"

    # The real thing applies exactly that file, and then nothing is pending.
    proc = monthend_cli(target, "migrate", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p["name"] for p in json.loads(proc.stdout)["applied"]] == [START_RUN]
    assert _checksum(conn, "repeatable", START_RUN) != "stale"
    assert monthend_cli(target, "migrate", "--status").returncode == 0


# --------------------------------------------------------------------------- refusals


def test_edited_versioned_migration_is_refused(empty_conn: psycopg.Connection,
                                               scratch_root: Path) -> None:
    migrate.apply(empty_conn, root=scratch_root)
    _edit(scratch_root, "sql/migrations/V003__source_tables.sql",
          "CREATE INDEX claims_transaction_claim_date_idx",
          "ALTER TABLE subledger.claims_transaction ADD COLUMN sneaky integer;\n"
          "CREATE INDEX claims_transaction_claim_date_idx")
    # Work that would otherwise be applied in the same call: none of it may be.
    (scratch_root / "sql/migrations/V900__later.sql").write_text(
        "CREATE TABLE batch.later_marker (x integer);\n")
    _edit(scratch_root, START_RUN, "BEGIN\n", "BEGIN\n    -- edited\n")
    before = snapshot(empty_conn)

    for attempt in (migrate.apply, migrate.plan):
        with pytest.raises(MigrationError) as raised:
            attempt(empty_conn, root=scratch_root)
        message = str(raised.value)
        assert "sql/migrations/V003__source_tables.sql was edited after it was applied" in message
        assert "new migration" in message
        assert raised.value.exit_code == 2
    assert snapshot(empty_conn) == before
    assert _value(empty_conn, "SELECT to_regclass('batch.later_marker')") is None


def test_cli_refuses_an_edited_versioned_migration(target: db.Target,
                                                   conn: psycopg.Connection) -> None:
    monthend_cli(target, "migrate", check=True)
    # The recorded checksum no longer matches the file: exactly what an edit looks like.
    _set_checksum(conn, "versioned", "V003__source_tables.sql", "0" * 64)
    _set_checksum(conn, "repeatable", START_RUN, "stale")
    before = snapshot(conn)
    for args in (("migrate",), ("migrate", "--status"), ("migrate", "--dry-run")):
        proc = monthend_cli(target, *args)
        assert proc.returncode == 2, f"{args}: {proc.stdout}{proc.stderr}"
        assert "sql/migrations/V003__source_tables.sql was edited" in proc.stderr
    assert snapshot(conn) == before


def test_applied_migration_missing_from_disk_is_refused(migrated_conn: psycopg.Connection,
                                                        scratch_root: Path) -> None:
    extra = scratch_root / "sql/migrations/V900__later.sql"
    extra.write_text("CREATE TABLE batch.later_marker (x integer);\n")
    migrate.apply(migrated_conn, root=scratch_root)
    extra.unlink()
    with pytest.raises(MigrationError, match=r"V900__later\.sql applied.*Upgrade monthend"):
        migrate.apply(migrated_conn, root=scratch_root)


# Each case: file, text to break, broken text, and whether the reported line is
# the broken line itself (plain SQL) or the start of the CREATE statement whose
# PL/pgSQL body is broken (the parser gives no position inside a body).
SYNTAX_ERRORS = {
    "versioned": ("sql/migrations/V005__batch_tables.sql",
                  "    workers           integer     NOT NULL,",
                  "    workers           integer     NOT NULL,,", "exact"),
    "repeatable-sql": ("sql/views/run_summary.sql", "CREATE OR REPLACE VIEW",
                       "CREATE OR REPLACE VEIW", "exact"),
    "template": ("partitions/create_batch_stage.sql.j2", "RETURNS void",
                 "RETURNS void void", "exact"),
    "plpgsql-body": (START_RUN, "    SELECT ap.status INTO v_status",
                     "    SELEC ap.status INTO v_status", "statement"),
}


def _break_file(root: Path, case: str) -> tuple[str, int]:
    """Introduce the case's syntax error; return the file name the message must
    carry and the line it must report."""
    name, old, new, where = SYNTAX_ERRORS[case]
    _edit(root, name, old, new)
    if where == "exact":
        line = _line_of(root, name, new)
    else:
        line = _line_of(root, name, "CREATE OR REPLACE")
    reported = Path(name).name if name.startswith("sql/migrations/") else name
    return reported, line


def _assert_names_file_and_line(message: str, name: str, line: int) -> None:
    assert f"{name}:{line}:" in message, message
    assert "syntax error" in message or "missing" in message, message
    assert "Nothing was applied" in message, message


@pytest.mark.parametrize("case", sorted(SYNTAX_ERRORS))
def test_syntax_error_on_empty_database_applies_nothing(
        case: str, empty_db: db.Target, empty_conn: psycopg.Connection,
        scratch_root: Path) -> None:
    name, line = _break_file(scratch_root, case)
    before = snapshot(empty_conn)
    with pytest.raises(MigrationError) as raised:
        migrate.apply(empty_conn, root=scratch_root)
    _assert_names_file_and_line(str(raised.value), name, line)
    # Not even the migration history table: the database is as it was.
    assert snapshot(empty_conn) == before
    assert _project_schemas(empty_conn) == []


@pytest.mark.parametrize("case", sorted(SYNTAX_ERRORS))
def test_syntax_error_on_migrated_database_applies_nothing(
        case: str, migrated_conn: psycopg.Connection, scratch_root: Path) -> None:
    # Pending work in files before and after the broken one must not be applied either.
    (scratch_root / "sql/migrations/V900__later.sql").write_text(
        "CREATE TABLE batch.later_marker (x integer);\n")
    _edit(scratch_root, VERIFY_CHAIN, "-- Checks every link", "-- Edited.\n-- Checks every link")
    if case == "versioned":
        # V005 is applied already, so an edit of it is refused as such: break a new file.
        name, line = "V901__broken.sql", 3
        (scratch_root / "sql/migrations" / name).write_text(
            "CREATE TABLE batch.broken_marker (x integer);\n\n"
            "CREATE TABLE batch.broken (x integer,);\n")
    else:
        name, line = _break_file(scratch_root, case)
    before = snapshot(migrated_conn)
    with pytest.raises(MigrationError) as raised:
        migrate.apply(migrated_conn, root=scratch_root)
    _assert_names_file_and_line(str(raised.value), name, line)
    assert snapshot(migrated_conn) == before


# --------------------------------------------------------------------------- repeatables


def _grantees(conn: psycopg.Connection, signature: str) -> set[str]:
    """Roles holding EXECUTE on a routine by an explicit grant ('PUBLIC' for public)."""
    rows = _rows(conn, """
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
        FROM pg_proc AS p,
             aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
        WHERE p.oid = %s::regprocedure AND a.privilege_type = 'EXECUTE'""", (signature,))
    return {r[0] for r in rows}


def test_changed_repeatable_is_reapplied_and_keeps_its_grants(
        migrated_conn: psycopg.Connection, scratch_root: Path) -> None:
    conn = migrated_conn
    expected = {
        START_RUN_SIGNATURE: {"monthend_owner", "monthend_runner"},
        "audit.verify_chain(bigint)": {"monthend_owner", "monthend_runner", "monthend_auditor"},
    }
    assert {sig: _grantees(conn, sig) for sig in expected} == expected
    # A grant lost by hand is restored too: the file carries its grants.
    conn.execute(f"REVOKE EXECUTE ON PROCEDURE {START_RUN_SIGNATURE} FROM monthend_runner")

    _edit(scratch_root, START_RUN, "BEGIN\n    SELECT ap.status",
          "BEGIN\n    -- re-applied body\n    SELECT ap.status")
    _edit(scratch_root, VERIFY_CHAIN, "-- Checks every link", "-- Edited.\n-- Checks every link")
    old_checksum = _checksum(conn, "repeatable", START_RUN)

    applied = migrate.apply(conn, root=scratch_root)

    assert sorted(f.name for f in applied) == sorted([START_RUN, VERIFY_CHAIN])
    assert _checksum(conn, "repeatable", START_RUN) != old_checksum
    assert "-- re-applied body" in _value(
        conn, "SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (START_RUN_SIGNATURE,))
    assert {sig: _grantees(conn, sig) for sig in expected} == expected
    privileges = _rows(conn, """
        SELECT has_function_privilege('monthend_runner', %(start)s, 'EXECUTE'),
               has_function_privilege('monthend_auditor', %(start)s, 'EXECUTE'),
               has_function_privilege('monthend_runner', 'audit.verify_chain(bigint)', 'EXECUTE'),
               has_function_privilege('monthend_auditor', 'audit.verify_chain(bigint)', 'EXECUTE'),
               (SELECT proowner::regrole::text FROM pg_proc WHERE oid = %(start)s::regprocedure)
        """, {"start": START_RUN_SIGNATURE})[0]
    assert privileges == (True, False, True, True, "monthend_owner")
    # Re-applications are audited like any migration.
    events = _rows(conn, "SELECT payload ->> 'name' FROM audit.log "
                         "WHERE event = 'MIGRATION_APPLIED' ORDER BY seq DESC LIMIT 2")
    assert sorted(e[0] for e in events) == sorted([START_RUN, VERIFY_CHAIN])
    assert migrate.apply(conn, root=scratch_root) == []


def test_new_versioned_migration_runs_as_owner(migrated_conn: psycopg.Connection,
                                               scratch_root: Path) -> None:
    (scratch_root / "sql/migrations/V900__later.sql").write_text(
        "CREATE TABLE gl.later_marker (x integer);\n")
    applied = migrate.apply(migrated_conn, root=scratch_root)
    assert [f.name for f in applied] == ["V900__later.sql"]
    with migrated_conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("""
            SELECT c.relowner::regrole::text AS owner,
                   has_table_privilege('monthend_auditor', c.oid, 'SELECT') AS auditor_reads,
                   has_table_privilege('monthend_runner', c.oid, 'INSERT') AS runner_writes
            FROM pg_class AS c WHERE c.oid = 'gl.later_marker'::regclass""").fetchone()
    assert row == {"owner": "monthend_owner", "auditor_reads": True, "runner_writes": False}
