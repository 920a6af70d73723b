"""Least privilege. The runner executes the run's procedures and writes nothing
directly; the auditor reads everything, runs the verification functions and
writes nothing; SECURITY DEFINER code cannot be steered through search_path;
and posted ledger rows and audit rows cannot be changed by anyone, owner and
superuser included (the test user is a superuser; roles are taken with SET ROLE).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from conftest import monthend_cli
from monthend import db

PERIOD = "2025-01"
SCHEMAS = ["subledger", "gl", "batch", "audit"]
RUNNER, AUDITOR, OWNER = "monthend_runner", "monthend_auditor", "monthend_owner"

# What the driver calls (driver/monthend/queries.sql), and the audit functions.
RUN_ROUTINES = [
    "batch.start_run(text,integer,integer,integer,bigint,text)",
    "batch.finalize_draft(bigint)",
    "batch.discard_draft(bigint)",
    "batch.start_reversal(bigint,text,text,text,text,text[],bigint[],integer,integer,integer,"
    "bigint)",
    "batch.start_period_end(text,integer,integer,integer,text,bigint)",
    "batch.start_auto_reversal(text,integer,integer,integer,bigint)",
    "batch.preflight(bigint)",
    "batch.allocate_ranges(bigint)",
    "batch.claim_range(bigint,text,bigint,integer,integer)",
    "batch.process_range(bigint)",
    "batch.record_range_failure(bigint,integer,text)",
    "batch.plan_validation_pieces(bigint)",
    "batch.run_validation_piece(bigint,integer)",
    "batch.validate_batch(bigint)",
    "batch.commit_batch(bigint)",
    "batch.post_process(bigint)",
    "batch.fail_batch(bigint,text)",
    "batch.cancel_batch(bigint)",
    "batch.reopen_batch(bigint)",
    "gl.ensure_period_partitions(text)",
    # The name of a period's claims partition (the bench vacuums it).
    "batch.claim_partition_name(text)",
    "gl.ensure_partitions_ahead(integer)",
    "batch.range_claim_held(bigint,integer)",
    # range_claim_held reads pg_locks by the claim's key.
    "batch.lock_key(text,bigint)",
]
VERIFY_ROUTINES = ["audit.verify_chain(bigint)", "audit.verify_batch(bigint)", "audit.head()",
                   "audit.verify_ledger()", "audit.verify_kept_head(bigint,text)",
                   "audit.prove_entry(text)",
                   # The one write an auditor makes: a VERIFICATION_RUN event.
                   "audit.record_verification(jsonb)",
                   # The seal's building blocks (seal version 2), so an auditor can
                   # recompute a leaf, a root or a path in psql.
                   "audit.merkle_leaf_hash(bytea)", "audit.merkle_parent_level(bytea[])",
                   "audit.merkle_root(bytea[])", "audit.merkle_path(bytea[],bigint)",
                   "audit.entry_leaf_hash(text)", "audit.range_root(smallint,text[],bytea[])",
                   "audit.batch_root(smallint,bytea[])",
                   "audit.ledger_entry_text(bigint,smallint,bigint,bigint)"]
# The compliance reports (sql/views/): read-only SQL functions. The runner may run
# those that read what it can read; the integrity report reads audit.log.
RUNNER_REPORTS = ["gl.large_transaction_report(text,numeric,bigint)",
                  "gl.high_value_transaction_report(text,numeric,bigint)",
                  "gl.trial_balance(text,bigint)", "gl.reversal_register(text)",
                  "batch.batch_movement(bigint)", "batch.accounting_diff(bigint,bigint,text)",
                  # The period-end reports, and the batch they read (or their refusal).
                  "gl.upr_report(text)", "gl.fx_revaluation_report(text)",
                  "gl.period_end_report_batch(text)"]
AUDITOR_REPORTS = [*RUNNER_REPORTS, "audit.integrity_report(text)"]
# Observability (sql/views/): read-only functions behind the dashboard, KPIs and
# health, for both roles; the runner also records alerts and KPIs.
OBSERVE_ROUTINES = ["batch.dashboard(bigint)", "batch.batch_worker_phase(bigint)",
                    "batch.compute_kpi(bigint)",
                    "batch.statement_stats(integer)", "batch.monitor_setting_value(text)",
                    # The je_number format, for queries of either role.
                    "gl.format_je_number(text,bigint)",
                    # How many months of ledger partitions are made ahead.
                    "gl.premade_months()"]
RUNNER_OBSERVE = [*OBSERVE_ROUTINES, "batch.evaluate_alerts(bigint)", "batch.record_kpi(bigint)"]
# The period lifecycle (procedures/*_period.sql) is the scheduler's right: it opens,
# runs and closes the month, and the database's checks and ordering rules guard each
# transition whoever calls it. Reopen and lock too, so that one role runs the whole
# month; a site that wants them apart grants them to a role of its own and revokes
# them from the runner (docs/dba.md#roles). The auditor changes no period.
PERIOD_ROUTINES = ["gl.open_period(text,text)", "gl.close_period(text,boolean,text)",
                   "gl.reopen_period(text,text)", "gl.lock_period(text,text)"]
# Read only, for both roles: where a period stands against its closing checks, and a
# closed period's seal and balances recomputed and verified.
PERIOD_READ_ROUTINES = ["gl.period_close_checks(text,boolean)", "audit.verify_period(text)",
                        "audit.period_seal_digest(text)",
                        # Where a period stands against its period-end: rows left
                        # unposted, the batch that stands for it, a revaluation to
                        # reverse, and the rounding rule's step 1 its UPR uses.
                        "gl.period_unposted_rows(text)", "gl.period_end_batch(text)",
                        "batch.auto_reversal_due(text)",
                        "gl.functional_amount(numeric,numeric,integer)"]
# Pure functions giving the canonical text an auditor hashes to check a seal.
CANONICAL_PREFIX = "audit.canonical_"


# --------------------------------------------------------------------------- helpers


@contextmanager
def as_role(target: db.Target, role: str | None) -> Iterator[psycopg.Connection]:
    """A connection acting as ``role`` (None: the superuser test user itself)."""
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as connection:
        if role:
            connection.execute(f"SET ROLE {role}")
        yield connection


def role_target(target: db.Target, role: str) -> db.Target:
    """The same database, every session of the CLI taking ``role`` from the start."""
    return db.Target(f"{target.conninfo} options='-c role={role}'", "--dsn")


def ledger_leaves(conn: psycopg.Connection) -> list[str]:
    """The leaf partitions holding posted ledger rows."""
    rows = conn.execute("""
        SELECT t.relid::regclass::text AS leaf
        FROM unnest(ARRAY['gl.journal_entry_header', 'gl.journal_entry_line']::regclass[]) AS p,
             pg_partition_tree(p) AS t
        WHERE t.isleaf ORDER BY 1""").fetchall()
    return [r["leaf"] for r in rows]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return conn.execute("""
        SELECT (SELECT count(*) FROM gl.journal_entry_header) AS headers,
               (SELECT count(*) FROM gl.journal_entry_line) AS lines,
               (SELECT count(*) FROM audit.log) AS audit_rows""").fetchone()


@pytest.fixture
def posted(target: db.Target, conn: psycopg.Connection) -> int:
    """A database with one committed batch; returns its batch_id."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "600", "--bad-rows", "0.02",
                 check=True)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        "200", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    assert counts(conn)["headers"] > 0
    return result["batch_id"]


# --------------------------------------------------------------------------- the roles


def test_roles_carry_no_special_attributes(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
               rolbypassrls
        FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname""",
                        ([OWNER, RUNNER, AUDITOR],)).fetchall()
    assert [r["rolname"] for r in rows] == sorted([OWNER, RUNNER, AUDITOR])
    for row in rows:
        assert not any(v for k, v in row.items() if k != "rolname"), row


def test_privilege_inventory(posted: int, conn: psycopg.Connection) -> None:
    """No write privilege, no CREATE, no EXECUTE beyond the contract, for either role,
    on anything in the project's schemas (partitions made by the run included)."""
    writes = conn.execute("""
        SELECT r.role, c.oid::regclass::text AS relation, w.privilege
        FROM unnest(%(roles)s::text[]) AS r (role)
        CROSS JOIN pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',
                                'TRIGGER']) AS w (privilege)
        WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND has_table_privilege(r.role, c.oid, w.privilege)
        ORDER BY 1, 2, 3""", {"roles": [RUNNER, AUDITOR], "schemas": SCHEMAS}).fetchall()
    assert writes == []

    creates = conn.execute("""
        SELECT r.role, s.schema FROM unnest(%(roles)s::text[]) AS r (role),
             unnest(%(schemas)s::text[]) AS s (schema)
        WHERE has_schema_privilege(r.role, s.schema, 'CREATE')""",
                           {"roles": [RUNNER, AUDITOR], "schemas": SCHEMAS}).fetchall()
    assert creates == []
    assert not conn.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE') "
                            "OR has_database_privilege(%s, current_database(), 'CREATE') AS c",
                            (RUNNER, AUDITOR)).fetchone()["c"]

    executable = conn.execute("""
        SELECT r.role, p.oid::regprocedure::text AS routine
        FROM unnest(%(roles)s::text[]) AS r (role)
        CROSS JOIN pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s) AND has_function_privilege(r.role, p.oid, 'EXECUTE')
        ORDER BY 1, 2""", {"roles": [RUNNER, AUDITOR, "public"], "schemas": SCHEMAS}).fetchall()
    by_role: dict[str, set[str]] = {}
    for row in executable:
        by_role.setdefault(row["role"], set()).add(row["routine"])
    canonical = {r for r in by_role.get(AUDITOR, set()) if r.startswith(CANONICAL_PREFIX)}
    assert by_role.get(AUDITOR, set()) == (set(VERIFY_ROUTINES) | set(AUDITOR_REPORTS)
                                           | set(OBSERVE_ROUTINES) | canonical
                                           | set(PERIOD_READ_ROUTINES))
    assert by_role.get(RUNNER, set()) >= (set(RUN_ROUTINES) | set(VERIFY_ROUTINES)
                                          | set(PERIOD_ROUTINES) | set(PERIOD_READ_ROUTINES))
    assert (by_role.get(RUNNER, set()) - set(RUN_ROUTINES) - set(VERIFY_ROUTINES)
            - set(RUNNER_REPORTS) - set(RUNNER_OBSERVE) - set(PERIOD_ROUTINES)
            - set(PERIOD_READ_ROUTINES)) == canonical
    # Nothing is callable by everyone: EXECUTE is granted on purpose or not at all.
    assert "public" not in by_role, sorted(by_role["public"])


def test_security_definer_routines_pin_search_path(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text AS routine,
               (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) AS c
                 WHERE c LIKE 'search_path=%%') AS search_path
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%s) AND p.prosecdef ORDER BY 1""", (SCHEMAS,)).fetchall()
    assert len(rows) >= len(RUN_ROUTINES)
    trusted = {"pg_catalog", *SCHEMAS}
    problems = []
    for row in rows:
        path = [s.strip().strip('"') for s in (row["search_path"] or "").split(",") if s.strip()]
        # pg_temp is searched first unless listed, so it must be listed, and last.
        if not path or path[-1] != "pg_temp" or not set(path[:-1]) <= trusted:
            problems.append(f"{row['routine']}: search_path {row['search_path']!r}")
    assert problems == []


# --------------------------------------------------------------------------- the runner


def test_runner_holds_execute_on_the_run_routines(conn: psycopg.Connection) -> None:
    missing = [r for r in RUN_ROUTINES + VERIFY_ROUTINES + PERIOD_ROUTINES
               if not conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE') AS ok",
                                   (RUNNER, r)).fetchone()["ok"]]
    assert missing == []


def test_runner_starts_and_cancels_a_batch(target: db.Target) -> None:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "50", check=True)
    with as_role(target, RUNNER) as runner:
        assert runner.execute("SELECT current_user AS u").fetchone()["u"] == RUNNER
        batch_id = runner.execute("CALL batch.start_run(%s, 2, 100, 3, NULL)",
                                  (PERIOD,)).fetchone()["p_batch_id"]
        runner.execute("CALL batch.cancel_batch(%s)", (batch_id,))
        status = runner.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                                (batch_id,)).fetchone()["status"]
    assert status == "CANCELLED"


@pytest.mark.full
def test_runner_role_alone_can_do_a_whole_run(target: db.Target, conn: psycopg.Connection) -> None:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "600", "--bad-rows", "0.02",
                 check=True)
    runner = role_target(target, RUNNER)
    proc = monthend_cli(runner, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        "200", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    assert result["posted_rows"] + result["dead_letter_rows"] == 600
    assert conn.execute("SELECT count(*) AS n FROM gl.journal_entry_header").fetchone()["n"] > 0


RUNNER_REFUSED = [
    "INSERT INTO gl.journal_entry_header SELECT * FROM gl.journal_entry_header LIMIT 1",
    "UPDATE gl.journal_entry_header SET description = 'forged'",
    "DELETE FROM gl.journal_entry_header",
    "TRUNCATE gl.journal_entry_header",
    "INSERT INTO gl.journal_entry_line SELECT * FROM gl.journal_entry_line LIMIT 1",
    "UPDATE gl.journal_entry_line SET debit = debit + 1",
    "DELETE FROM gl.journal_entry_line",
    "TRUNCATE gl.journal_entry_line",
    "INSERT INTO audit.log SELECT * FROM audit.log LIMIT 1",
    "UPDATE audit.log SET payload = '{}'",
    "DELETE FROM audit.log",
    "TRUNCATE audit.log",
    "UPDATE audit.chain_head SET seq = seq",
    "SELECT audit.append('FORGED', '{}')",
    "INSERT INTO batch.run (period, workers, range_size, max_attempts) VALUES ('2025-01', 1, 1, 1)",
    "UPDATE batch.run SET status = 'COMMITTED'",
    "UPDATE batch.range SET status = 'DONE'",
    "DELETE FROM batch.source_claim",
    "UPDATE batch.dead_letter SET status = 'RESOLVED'",
    "DELETE FROM batch.schema_migration",
    "UPDATE gl.posting_rule SET ratio = ratio",
    "UPDATE gl.accounting_period SET status = 'CLOSED'",
    "INSERT INTO gl.accounting_period (period, start_date, end_date) "
    "VALUES ('2030-01', '2030-01-01', '2030-01-31')",
    "DELETE FROM gl.period_balance",
    "INSERT INTO gl.period_check (period, closed_at, check_name, status) "
    "VALUES ('2025-01', now(), 'forged', 'PASS')",
    "UPDATE gl.period_seal_batch SET digest = digest",
    "INSERT INTO gl.period_transition VALUES ('OPEN', 'FUTURE', 'FORGED', NULL)",
    "UPDATE gl.setting SET late_row_policy = late_row_policy",
    "UPDATE gl.fx_rate SET rate = rate * 2",
    "INSERT INTO subledger.premium_transaction (txn_id) VALUES (-1)",
    "UPDATE subledger.claims_transaction SET amount = 0",
    "CALL subledger.generate_transactions('2025-02', 10, 0, 1, NULL, NULL, NULL)",
    "SELECT batch.log_event(NULL, 'FORGED', 'forged', '{}', 'INFO')",
    "CREATE TABLE gl.forged (x integer)",
]


def _not_denied(session: psycopg.Connection, statements: list[str]) -> list[str]:
    """Statements not refused for want of privilege (a trigger refusing after the
    privilege check passed does not count), each in its own rolled-back transaction."""
    failures = []
    for statement in statements:
        try:
            with session.transaction(force_rollback=True):
                session.execute(statement)
        except errors.InsufficientPrivilege as exc:
            if "permission denied" not in str(exc):
                failures.append(f"{statement}: {str(exc).strip()}")
        except psycopg.Error as exc:
            failures.append(f"{statement}: {type(exc).__name__}: {str(exc).strip()}")
        else:
            failures.append(f"{statement}: accepted")
    return failures


@pytest.mark.full
def test_runner_cannot_write_directly(posted: int, target: db.Target,
                                      conn: psycopg.Connection) -> None:
    before = counts(conn)
    with as_role(target, RUNNER) as runner:
        failures = _not_denied(runner, RUNNER_REFUSED)
    assert failures == [], "\n".join(failures)
    assert counts(conn) == before


@pytest.mark.full
def test_runner_cannot_write_ledger_partitions(posted: int, target: db.Target,
                                              conn: psycopg.Connection) -> None:
    leaves = ledger_leaves(conn)
    assert leaves
    statements = [f"{verb} {leaf}" for leaf in leaves
                  for verb in ("DELETE FROM", "TRUNCATE", "UPDATE")]
    statements = [s + " SET batch_id = batch_id" if s.startswith("UPDATE") else s
                  for s in statements]
    with as_role(target, RUNNER) as runner:
        failures = _not_denied(runner, statements)
    assert failures == [], "\n".join(failures)


# --------------------------------------------------------------------------- the auditor


@pytest.mark.full
def test_auditor_reads_every_table(posted: int, target: db.Target,
                                   conn: psycopg.Connection) -> None:
    relations = [r["rel"] for r in conn.execute("""
        SELECT c.oid::regclass::text AS rel FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1""",
                                                  (SCHEMAS,)).fetchall()]
    for required in ("gl.journal_entry_header", "gl.journal_entry_line", "batch.run",
                     "batch.range", "batch.validation_result", "batch.event",
                     "batch.dead_letter", "audit.log", "subledger.premium_transaction"):
        assert required in relations
    unreadable = []
    with as_role(target, AUDITOR) as auditor:
        for relation in relations:
            try:
                auditor.execute(f"SELECT count(*) FROM {relation}").fetchone()
            except errors.InsufficientPrivilege:
                unreadable.append(relation)
        assert auditor.execute("SELECT count(*) AS n FROM gl.journal_entry_line"
                               ).fetchone()["n"] == counts(conn)["lines"]
    assert unreadable == []


@pytest.mark.full
def test_auditor_runs_the_verification_functions(posted: int, target: db.Target,
                                                 conn: psycopg.Connection) -> None:
    last = conn.execute("SELECT max(seq) AS seq FROM audit.log").fetchone()["seq"]
    with as_role(target, AUDITOR) as auditor:
        assert auditor.execute("SELECT * FROM audit.verify_chain()").fetchall() == []
        assert auditor.execute("SELECT * FROM audit.verify_batch(%s)",
                               (posted,)).fetchall() == []
        head = auditor.execute("SELECT * FROM audit.head()").fetchone()
    assert head["seq"] == last
    assert len(head["hash"]) == 64

    # The CLI as the auditor: the whole of `monthend verify` needs no more than that.
    proc = monthend_cli(role_target(target, AUDITOR), "verify", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["batches_verified"] == [posted]


AUDITOR_REFUSED = [
    "INSERT INTO batch.run (period, workers, range_size, max_attempts) VALUES ('2025-01', 1, 1, 1)",
    "UPDATE batch.run SET error = 'x'",
    "DELETE FROM batch.dead_letter",
    "INSERT INTO gl.journal_entry_header SELECT * FROM gl.journal_entry_header LIMIT 1",
    "INSERT INTO gl.journal_entry_line SELECT * FROM gl.journal_entry_line LIMIT 1",
    "UPDATE gl.journal_entry_line SET credit = credit",
    "DELETE FROM gl.journal_entry_header",
    "INSERT INTO gl.account VALUES ('9999', 'forged', 'ASSET')",
    "INSERT INTO audit.log SELECT * FROM audit.log LIMIT 1",
    "DELETE FROM audit.log",
    "UPDATE audit.chain_head SET seq = seq",
    "SELECT audit.append('FORGED', '{}')",
    "INSERT INTO subledger.premium_transaction (txn_id) VALUES (-1)",
    "CALL batch.start_run('2025-01', 1, 100, 1, NULL)",
    "CALL batch.cancel_batch(1)",
    "CALL batch.commit_batch(1)",
    "CALL gl.open_period('2025-02')",
    "CALL gl.close_period('2025-01')",
    "CALL gl.reopen_period('2025-01', 'forged')",
    "CALL gl.lock_period('2025-01')",
    "UPDATE gl.accounting_period SET status_reason = 'forged'",
    "DELETE FROM gl.period_balance",
    "SELECT * FROM gl.ensure_period_partitions('2025-02')",
    "CALL subledger.generate_transactions('2025-02', 10, 0, 1, NULL, NULL, NULL)",
    "CREATE TABLE audit.forged (x integer)",
]


@pytest.mark.full
def test_auditor_writes_nothing(posted: int, target: db.Target,
                                conn: psycopg.Connection) -> None:
    before = counts(conn)
    with as_role(target, AUDITOR) as auditor:
        failures = _not_denied(auditor, AUDITOR_REFUSED)
    assert failures == [], "\n".join(failures)
    assert counts(conn) == before


# --------------------------------------------------------------------------- nobody


def _refusals(conn: psycopg.Connection, statements: list[str]) -> list[str]:
    """Statements that were NOT refused (each tried in its own rolled-back transaction)."""
    accepted = []
    for statement in statements:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(statement)
        except errors.InsufficientPrivilege as exc:
            assert "refused" in str(exc), f"{statement}: {exc}"
        else:
            accepted.append(statement)
    return accepted


@pytest.mark.parametrize("role", [None, OWNER], ids=["superuser", "owner"])
@pytest.mark.full
def test_nobody_changes_posted_ledger_rows(posted: int, target: db.Target,
                                           conn: psycopg.Connection, role: str | None) -> None:
    before = counts(conn)
    statements = []
    for table in ("gl.journal_entry_header", "gl.journal_entry_line"):
        statements += [f"UPDATE {table} SET batch_id = batch_id",
                       f"DELETE FROM {table}",
                       f"TRUNCATE {table}"]
    with as_role(target, role) as session:
        accepted = _refusals(session, statements)
    assert accepted == [], "posted ledger rows were changed by: " + "; ".join(accepted)
    assert counts(conn) == before


@pytest.mark.parametrize("role", [None, OWNER], ids=["superuser", "owner"])
@pytest.mark.full
def test_nobody_changes_ledger_partitions_directly(posted: int, target: db.Target,
                                                  conn: psycopg.Connection,
                                                  role: str | None) -> None:
    """Addressing a partition instead of the ledger table is no way around it."""
    before = counts(conn)
    statements = []
    for leaf in ledger_leaves(conn):
        statements += [f"UPDATE {leaf} SET batch_id = batch_id", f"DELETE FROM {leaf}",
                       f"TRUNCATE {leaf}"]
    month = [r["rel"] for r in conn.execute("""
        SELECT c.oid::regclass::text AS rel FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('gl.journal_entry_header'::regclass,
                              'gl.journal_entry_line'::regclass)""").fetchall()]
    statements += [f"TRUNCATE {m}" for m in month]
    with as_role(target, role) as session:
        accepted = _refusals(session, statements)
    assert accepted == [], "posted ledger rows were changed by: " + "; ".join(accepted)
    assert counts(conn) == before


@pytest.mark.parametrize("role", [None, OWNER], ids=["superuser", "owner"])
@pytest.mark.full
def test_nobody_changes_the_audit_log(posted: int, target: db.Target, conn: psycopg.Connection,
                                      role: str | None) -> None:
    before = counts(conn)
    statements = ["UPDATE audit.log SET payload = '{}'",
                  "UPDATE audit.log SET seq = seq",
                  "DELETE FROM audit.log",
                  "DELETE FROM audit.log WHERE seq = (SELECT max(seq) FROM audit.log)",
                  "TRUNCATE audit.log",
                  "DELETE FROM audit.chain_head",
                  "TRUNCATE audit.chain_head"]
    with as_role(target, role) as session:
        accepted = _refusals(session, statements)
    assert accepted == [], "audit rows were changed by: " + "; ".join(accepted)
    assert counts(conn) == before
    assert conn.execute("SELECT * FROM audit.verify_chain()").fetchall() == []


@pytest.mark.full
def test_audit_rows_appended_by_hand_cannot_forge_a_link(posted: int,
                                                         conn: psycopg.Connection) -> None:
    """Even a superuser's direct INSERT is linked by the trigger, not by the caller."""
    head = conn.execute("SELECT * FROM audit.head()").fetchone()
    row = conn.execute("""
        INSERT INTO audit.log (seq, at, event, batch_id, payload, actor, prev_hash, hash)
        VALUES (1, now() - interval '1 year', 'FORGED', NULL, '{}', 'someone else',
                sha256('x'), sha256('y'))
        RETURNING seq, actor, encode(prev_hash, 'hex') AS prev_hash""").fetchone()
    assert row["seq"] == head["seq"] + 1
    assert row["prev_hash"] == head["hash"]
    assert row["actor"] != "someone else"
    assert conn.execute("SELECT * FROM audit.verify_chain()").fetchall() == []
