"""The period lifecycle: FUTURE -> OPEN -> CLOSED (-> reopened) -> PERMANENTLY_CLOSED,
enforced by the database whoever writes; the closing checks, each named when it
fails; the balances a close writes and its seal; reopening only the latest
closed period; locking in order; late rows dead-lettered; runs refused on a
period that is not open; and the `monthend period` commands.

Tests that post batches through the CLI are in the full tier (pyproject.toml);
the state machine, the refusals and the commands on unposted periods are fast."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from conftest import monthend_cli
from monthend import db

PERIOD, NEXT = "2025-01", "2025-02"
# A period far from the generated ones, for the state machine.
SPARE = "2030-05"
STATUSES = ["absent", "FUTURE", "OPEN", "CLOSED", "PERMANENTLY_CLOSED"]


# --------------------------------------------------------------------------- helpers


def generate(conn: psycopg.Connection, period: str, txns: int = 240, bad: str = "0",
             seed: int = 1) -> None:
    conn.execute("CALL subledger.generate_transactions(%s, %s, %s, %s, NULL, NULL, NULL)",
                 (period, txns, Decimal(bad), seed))


def run(target: db.Target, period: str, expect: int = 0) -> dict[str, Any]:
    proc = monthend_cli(target, "run", "--period", period, "--range-size", "100", "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def period_cli(target: db.Target, *args: str, expect: int = 0) -> tuple[dict[str, Any], str]:
    """`monthend period ARGS --json`: its document, and its stderr."""
    proc = monthend_cli(target, "period", *args, "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout), proc.stderr


def refusal(conn: psycopg.Connection, statement: str, params: Any = None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params)
    return info.value


def written(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything a transition or a close writes."""
    return conn.execute("""
        SELECT (SELECT coalesce(jsonb_agg(to_jsonb(ap) ORDER BY ap.period), '[]')
                  FROM gl.accounting_period AS ap) AS periods,
               (SELECT count(*) FROM gl.period_balance) AS balances,
               (SELECT count(*) FROM gl.period_seal_batch) AS seal_batches,
               (SELECT count(*) FROM gl.period_check) AS checks,
               (SELECT max(seq) FROM audit.log) AS audit_seq""").fetchone()


def status_of(conn: psycopg.Connection, period: str) -> str | None:
    row = conn.execute("SELECT status FROM gl.accounting_period WHERE period = %s",
                       (period,)).fetchone()
    return row["status"] if row else None


def bring_to(conn: psycopg.Connection, period: str, status: str) -> None:
    """A period with no source rows in ``status``, reached through its lifecycle."""
    if status == "absent":
        return
    if status == "FUTURE":
        conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date) "
                     "VALUES (%(p)s::text, to_date(%(p)s::text, 'YYYY-MM'), "
                     "(to_date(%(p)s::text, 'YYYY-MM') + interval '1 month - 1 day')::date)",
                     {"p": period})
        return
    conn.execute("CALL gl.open_period(%s, 'test')", (period,))
    if status in ("CLOSED", "PERMANENTLY_CLOSED"):
        conn.execute("CALL gl.close_period(%s)", (period,))
    if status == "PERMANENTLY_CLOSED":
        conn.execute("CALL gl.lock_period(%s)", (period,))
    assert status_of(conn, period) == status


def last_event(conn: psycopg.Connection) -> dict[str, Any]:
    return conn.execute("SELECT * FROM audit.log ORDER BY seq DESC LIMIT 1").fetchone()


def trial_balance(conn: psycopg.Connection, period: str) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM gl.trial_balance(%s)", (period,)).fetchall()


def tamper(conn: psycopg.Connection, statement: str, params: Any = None) -> None:
    """As the superuser with the refusing triggers off (tests/test_tamper.py)."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statement, params)


# --------------------------------------------------------------------------- the state machine

ACTIONS = {
    "open": "CALL gl.open_period(%s, 'opened for the test')",
    "close": "CALL gl.close_period(%s)",
    "reopen": "CALL gl.reopen_period(%s, 'a late invoice')",
    "lock": "CALL gl.lock_period(%s)",
}
ALLOWED = {
    ("absent", "open"): ("OPEN", "PERIOD_OPENED"),
    ("FUTURE", "open"): ("OPEN", "PERIOD_OPENED"),
    ("OPEN", "close"): ("CLOSED", "PERIOD_CLOSED"),
    ("CLOSED", "reopen"): ("OPEN", "PERIOD_REOPENED"),
    ("CLOSED", "lock"): ("PERMANENTLY_CLOSED", "PERIOD_LOCKED"),
}
_ABSENT = ("accounting period 2030-05 does not exist",
           "Open it with `monthend period open 2030-05`.")
_FINAL = ("period 2030-05 is PERMANENTLY_CLOSED: nothing may change it",
          "Post corrections in an open period.")
_FROM_FUTURE = "From FUTURE a period can become: OPEN (`monthend period open 2030-05`), deleted."
REFUSED = {
    ("absent", "close"): _ABSENT,
    ("absent", "reopen"): _ABSENT,
    ("absent", "lock"): _ABSENT,
    ("FUTURE", "close"): ("period 2030-05 is FUTURE and cannot become CLOSED", _FROM_FUTURE),
    ("FUTURE", "reopen"): ("period 2030-05 is FUTURE; only a CLOSED period is reopened",
                           "Open it with `monthend period open 2030-05`."),
    ("FUTURE", "lock"): ("period 2030-05 is FUTURE and cannot become PERMANENTLY_CLOSED",
                         _FROM_FUTURE),
    ("OPEN", "open"): ("period 2030-05 is already OPEN", "Nothing to do."),
    ("OPEN", "reopen"): ("period 2030-05 is already OPEN", "Nothing to do."),
    ("OPEN", "lock"): ("period 2030-05 is OPEN and cannot become PERMANENTLY_CLOSED",
                       "From OPEN a period can become: CLOSED (`monthend period close "
                       "2030-05`), deleted."),
    ("CLOSED", "open"): ("period 2030-05 is CLOSED; reopening a closed period needs a reason",
                         "`monthend period reopen 2030-05 --reason TEXT`."),
    ("CLOSED", "close"): ("period 2030-05 is already CLOSED", "Nothing to do."),
    ("PERMANENTLY_CLOSED", "open"): _FINAL,
    ("PERMANENTLY_CLOSED", "close"): _FINAL,
    ("PERMANENTLY_CLOSED", "reopen"): _FINAL,
    ("PERMANENTLY_CLOSED", "lock"): ("period 2030-05 is already PERMANENTLY_CLOSED",
                                     "Nothing to do."),
}


def test_every_pair_of_status_and_procedure_is_allowed_or_refused() -> None:
    assert set(ALLOWED) | set(REFUSED) == {(s, a) for s in STATUSES for a in ACTIONS}
    assert not set(ALLOWED) & set(REFUSED)


def test_the_transition_table(conn: psycopg.Connection) -> None:
    """A PERMANENTLY_CLOSED period changes only by its archive (ARCHIVED, then
    RESTORED and ARCHIVED again), which no `monthend period` verb makes."""
    rows = conn.execute("SELECT from_status, to_status, event, command "
                        "FROM gl.period_transition ORDER BY 1 NULLS FIRST, 2 NULLS LAST").fetchall()
    assert all(r["command"] is None for r in rows if "ARCHIVED" in (r["from_status"],
                                                                     r["to_status"]))
    assert [(r["from_status"], r["to_status"], r["event"]) for r in rows] == [
        (None, "FUTURE", "PERIOD_CREATED"), (None, "OPEN", "PERIOD_OPENED"),
        ("ARCHIVED", "RESTORED", "PERIOD_RESTORED"),
        ("CLOSED", "OPEN", "PERIOD_REOPENED"), ("CLOSED", "PERMANENTLY_CLOSED", "PERIOD_LOCKED"),
        ("FUTURE", "OPEN", "PERIOD_OPENED"), ("FUTURE", None, "PERIOD_DELETED"),
        ("OPEN", "CLOSED", "PERIOD_CLOSED"), ("OPEN", None, "PERIOD_DELETED"),
        ("PERMANENTLY_CLOSED", "ARCHIVED", "PERIOD_ARCHIVED"),
        ("RESTORED", "ARCHIVED", "PERIOD_ARCHIVED")]
    check = conn.execute("SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint "
                         "WHERE conname = 'accounting_period_status_check'").fetchone()["d"]
    for status in ("FUTURE", "OPEN", "CLOSED", "PERMANENTLY_CLOSED", "ARCHIVED", "RESTORED"):
        assert f"'{status}'" in check


@pytest.mark.parametrize(("status", "action"), sorted(ALLOWED))
def test_allowed_transition(conn: psycopg.Connection, status: str, action: str) -> None:
    bring_to(conn, SPARE, status)
    before = last_event(conn)["seq"]
    conn.execute(ACTIONS[action], (SPARE,))
    to_status, event = ALLOWED[(status, action)]
    row = conn.execute("SELECT * FROM gl.accounting_period WHERE period = %s",
                       (SPARE,)).fetchone()
    assert row["status"] == to_status
    assert row["status_changed_by"] == conn.info.user
    assert (row["seal_digest"] is not None) == (to_status != "OPEN")
    events = conn.execute("SELECT event, actor, payload FROM audit.log WHERE seq > %s "
                          "ORDER BY seq", (before,)).fetchall()
    assert [e["event"] for e in events] == [event]
    payload = events[0]["payload"]
    assert payload["period"] == SPARE and payload["status"] == to_status
    assert payload["status_was"] == (None if status == "absent" else status)
    assert events[0]["actor"] == conn.info.user
    if action in ("open", "reopen"):
        assert payload["reason"] == ("a late invoice" if action == "reopen"
                                     else "opened for the test")
    assert conn.execute("SELECT count(*) AS n FROM audit.verify_chain()").fetchone()["n"] == 0


@pytest.mark.parametrize(("status", "action"), sorted(REFUSED))
def test_refused_transition_says_why_and_writes_nothing(conn: psycopg.Connection, status: str,
                                                        action: str) -> None:
    bring_to(conn, SPARE, status)
    before = written(conn)
    error = refusal(conn, ACTIONS[action], (SPARE,))
    message, hint = REFUSED[(status, action)]
    assert isinstance(error, errors.ObjectNotInPrerequisiteState)
    assert error.diag.message_primary == message
    assert error.diag.message_hint == hint
    assert written(conn) == before


def test_reopening_needs_a_reason(conn: psycopg.Connection) -> None:
    bring_to(conn, SPARE, "CLOSED")
    before = written(conn)
    for reason in (None, "", "  "):
        error = refusal(conn, "CALL gl.reopen_period(%s, %s)", (SPARE, reason))
        assert isinstance(error, errors.InvalidParameterValue)
        assert error.diag.message_primary == "reopening period 2030-05 needs a reason"
    assert written(conn) == before


# Direct SQL, as the owner or a superuser would write it: the guard refuses what
# the procedures would refuse, and what only a close may do.
DIRECT = [
    ("OPEN", "UPDATE gl.accounting_period SET status = 'CLOSED' WHERE period = '2030-05'",
     "period 2030-05 cannot be CLOSED without its balances and seal"),
    ("OPEN", "UPDATE gl.accounting_period SET status = 'FUTURE' WHERE period = '2030-05'",
     "period 2030-05 is OPEN and cannot become FUTURE"),
    ("OPEN", "UPDATE gl.accounting_period SET seal_digest = sha256('x') "
             "WHERE period = '2030-05'",
     "period 2030-05 is OPEN and cannot carry a seal"),
    ("FUTURE", "UPDATE gl.accounting_period SET je_numbers_used = 1 WHERE period = '2030-05'",
     "period 2030-05 is FUTURE: nothing can be posted to it"),
    ("CLOSED", "UPDATE gl.accounting_period SET status = 'OPEN', status_reason = 'why' "
               "WHERE period = '2030-05'",
     "period 2030-05 cannot be OPEN while it carries a seal"),
    ("CLOSED", "UPDATE gl.accounting_period SET status = 'ARCHIVED' WHERE period = '2030-05'",
     "period 2030-05 is CLOSED and cannot become ARCHIVED"),
    ("CLOSED", "UPDATE gl.accounting_period SET je_numbers_used = 7 WHERE period = '2030-05'",
     "period 2030-05 is CLOSED: it changes only by a transition of its status"),
    ("CLOSED", "DELETE FROM gl.accounting_period WHERE period = '2030-05'",
     "period 2030-05 is CLOSED and cannot become deleted"),
    ("PERMANENTLY_CLOSED", "UPDATE gl.accounting_period SET status_reason = 'x' "
                           "WHERE period = '2030-05'",
     "period 2030-05 is PERMANENTLY_CLOSED: nothing may change it"),
    ("PERMANENTLY_CLOSED", "UPDATE gl.accounting_period SET status = 'RESTORED' "
                           "WHERE period = '2030-05'",
     "period 2030-05 is PERMANENTLY_CLOSED: nothing may change it"),
    ("PERMANENTLY_CLOSED", "DELETE FROM gl.accounting_period WHERE period = '2030-05'",
     "period 2030-05 is PERMANENTLY_CLOSED: nothing may change it"),
    ("absent", "INSERT INTO gl.accounting_period (period, start_date, end_date, status) "
               "VALUES ('2030-05', '2030-05-01', '2030-05-31', 'CLOSED')",
     "period 2030-05 does not exist, and a period is created FUTURE or OPEN, not CLOSED"),
    ("CLOSED", "INSERT INTO gl.period_balance VALUES ('2030-05', '1000', 'USD', 0, 0, 0, 0, "
               "0, 0, 0, 0, 0)",
     "INSERT on gl.period_balance refused: period 2030-05 is CLOSED"),
    ("CLOSED", "UPDATE gl.period_check SET actual = 'forged'",
     "UPDATE on gl.period_check refused: a period's sealed balances and closing checks "
     "are never changed"),
    ("CLOSED", "DELETE FROM gl.period_check",
     "DELETE on gl.period_check refused: a period's sealed balances and closing checks "
     "are never changed"),
    ("PERMANENTLY_CLOSED", "TRUNCATE gl.period_balance",
     "TRUNCATE on gl.period_balance refused: a period's sealed balances and closing checks "
     "are never changed"),
]


@pytest.mark.parametrize(("status", "statement", "message"), DIRECT,
                         ids=[f"{s}:{t.split()[0]}-{i}" for i, (s, t, _) in enumerate(DIRECT)])
def test_the_database_refuses_direct_changes(conn: psycopg.Connection, status: str,
                                             statement: str, message: str) -> None:
    bring_to(conn, SPARE, status)
    before = written(conn)
    error = refusal(conn, statement)
    assert error.diag.message_primary == message
    assert written(conn) == before


def test_direct_creation_and_deletion_are_audited(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date, status) "
                 "VALUES ('2030-05', '2030-05-01', '2030-05-31', 'OPEN')")
    created = last_event(conn)
    assert created["event"] == "PERIOD_OPENED"
    assert created["payload"]["status_was"] is None
    conn.execute("DELETE FROM gl.accounting_period WHERE period = '2030-05'")
    deleted = last_event(conn)
    assert (deleted["event"], deleted["payload"]["status_was"]) == ("PERIOD_DELETED", "OPEN")
    assert conn.execute("SELECT count(*) AS n FROM audit.verify_chain()").fetchone()["n"] == 0


def test_a_period_is_not_created_before_a_closed_one(conn: psycopg.Connection) -> None:
    bring_to(conn, SPARE, "CLOSED")
    error = refusal(conn, "CALL gl.open_period('2030-04')")
    assert error.diag.message_primary == ("period 2030-04 cannot be created before a closed "
                                          "period: 2030-05 (CLOSED)")


# --------------------------------------------------------------------------- closing checks


def close_refusal(conn: psycopg.Connection, period: str = PERIOD,
                  carry: bool = False) -> psycopg.Error:
    before = written(conn)
    error = refusal(conn, "CALL gl.close_period(%s, %s)", (period, carry))
    assert written(conn) == before, "a refused close wrote something"
    assert status_of(conn, period) == "OPEN"
    return error


def failed_checks(conn: psycopg.Connection, period: str = PERIOD,
                  carry: bool = False) -> dict[str, dict[str, Any]]:
    return {r["check_name"]: r for r in conn.execute(
        "SELECT * FROM gl.period_close_checks(%s, %s)", (period, carry)) if not r["passed"]}


def test_close_refused_while_a_batch_is_active(conn: psycopg.Connection) -> None:
    conn.execute("CALL gl.open_period(%s)", (PERIOD,))
    batch_id = conn.execute("CALL batch.start_run(%s, 1, 100, 1, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    error = close_refusal(conn)
    assert isinstance(error, errors.ObjectNotInPrerequisiteState)
    assert error.diag.message_primary == (
        f"period {PERIOD} cannot be closed: no_active_batch (expected every batch of the "
        f"period COMMITTED or CANCELLED; found batch {batch_id} (STARTED))")
    assert error.diag.message_hint == (f"Wait for it, or finish it with \"monthend resume "
                                       f"{batch_id}\", or abandon it with \"monthend cancel "
                                       f"{batch_id}\".")
    conn.execute("CALL batch.cancel_batch(%s)", (batch_id,))
    conn.execute("CALL gl.close_period(%s)", (PERIOD,))
    assert status_of(conn, PERIOD) == "CLOSED"


@pytest.mark.full
def test_close_refused_while_source_rows_are_unposted(target: db.Target,
                                                      conn: psycopg.Connection) -> None:
    generate(conn, PERIOD, txns=50)
    error = close_refusal(conn)
    assert isinstance(error, errors.ObjectNotInPrerequisiteState)
    assert error.diag.message_primary == (
        f"period {PERIOD} cannot be closed: subledger_complete (expected every source row "
        "dated in the period posted or dead-lettered; found 50 row(s) neither posted nor "
        "dead-lettered)")
    assert error.diag.message_hint == f"Post or dead-letter them: `monthend run --period {PERIOD}`."
    unposted = failed_checks(conn)["subledger_complete"]["detail"]
    assert unposted["unposted_rows"] == 50
    assert sum(Decimal(v) for v in unposted["unposted_amount"].values()) == conn.execute(
        "SELECT sum(amount) AS s FROM subledger.source_transaction").fetchone()["s"]

    run(target, PERIOD)
    assert failed_checks(conn) == {}
    conn.execute("CALL gl.close_period(%s)", (PERIOD,))


@pytest.mark.full
def test_close_refused_when_the_ledger_does_not_balance(target: db.Target,
                                                        conn: psycopg.Connection) -> None:
    generate(conn, PERIOD)
    run(target, PERIOD)
    line = conn.execute("SELECT je_id, line_no FROM gl.journal_entry_line "
                        "WHERE debit > 0 ORDER BY je_id, line_no LIMIT 1").fetchone()
    currency = conn.execute("SELECT currency FROM gl.journal_entry_header WHERE je_id = %s",
                            (line["je_id"],)).fetchone()["currency"]
    tamper(conn, "UPDATE gl.journal_entry_line SET debit = debit + 1 "
                 "WHERE je_id = %(je_id)s AND line_no = %(line_no)s", line)
    error = close_refusal(conn)
    # Not something to do first: the ledger is wrong (exit 1, not 2).
    assert isinstance(error, errors.CheckViolation)
    primary = error.diag.message_primary
    assert primary.startswith(f"period {PERIOD} cannot be closed: ledger_balanced (expected "
                              "debits = credits per currency")
    assert f"found {currency}: debits " in primary
    failed = failed_checks(conn)
    assert set(failed) == {"ledger_balanced"}
    assert "monthend verify" in failed["ledger_balanced"]["hint"]

    proc = monthend_cli(target, "period", "close", PERIOD, "--json")
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert document["status"] == "ERROR" and document["exit_code"] == 1
    assert [c["check_name"] for c in document["checks"] if not c["passed"]] == ["ledger_balanced"]


@pytest.mark.full
def test_close_refused_when_the_ledger_is_not_what_the_runs_recorded(
        target: db.Target, conn: psycopg.Connection) -> None:
    """Lines removed in balanced pairs still balance; the run's records say otherwise."""
    generate(conn, PERIOD)
    batch_id = run(target, PERIOD)["batch_id"]
    entry = conn.execute("SELECT je_id FROM gl.journal_entry_header ORDER BY je_id LIMIT 1"
                         ).fetchone()["je_id"]
    lines = conn.execute("SELECT count(*) AS n FROM gl.journal_entry_line WHERE je_id = %s",
                         (entry,)).fetchone()["n"]
    tamper(conn, "DELETE FROM gl.journal_entry_line WHERE je_id = %s", (entry,))
    error = close_refusal(conn)
    assert isinstance(error, errors.CheckViolation)
    assert set(failed_checks(conn)) == {"ledger_matches_batches"}
    assert f"batch {batch_id}: ledger " in error.diag.message_primary
    recorded = conn.execute("SELECT line_count FROM batch.run WHERE batch_id = %s",
                            (batch_id,)).fetchone()["line_count"]
    assert f"recorded {recorded} lines" in error.diag.message_primary
    assert f"ledger {recorded - lines} lines" in error.diag.message_primary


@pytest.mark.full
def test_open_dead_letters_refuse_the_close_unless_carried(target: db.Target,
                                                           conn: psycopg.Connection) -> None:
    generate(conn, PERIOD, bad="0.1", seed=4)
    run(target, PERIOD)
    dead = conn.execute("""
        SELECT count(*) AS n, coalesce(d.currency, '?') AS currency, sum(d.amount) AS amount
        FROM batch.dead_letter AS d
        JOIN subledger.source_transaction AS s
          ON s.source_type = d.source_type AND s.source_id = d.source_id
        WHERE d.status = 'OPEN' AND to_char(s.txn_date, 'YYYY-MM') = %s
        GROUP BY 2""", (PERIOD,)).fetchall()
    rows = sum(d["n"] for d in dead)
    assert rows > 0
    amounts = {d["currency"]: str(d["amount"] if d["amount"] is not None else 0) for d in dead}

    error = close_refusal(conn)
    assert isinstance(error, errors.ObjectNotInPrerequisiteState)
    assert error.diag.message_primary.startswith(
        f"period {PERIOD} cannot be closed: dead_letters (expected no open dead letter dated "
        f"in the period; found {rows} open, amounts ")
    assert error.diag.message_hint == (
        f"Fix their causes and run the period again (`monthend dlq list`, `monthend run "
        f"--period {PERIOD}`), or close with them carried: `monthend period close {PERIOD} "
        "--carry-dead-letters`.")

    document, _ = period_cli(target, "close", PERIOD, "--carry-dead-letters")
    assert document["status"] == "CLOSED"
    carried = conn.execute("SELECT * FROM gl.period_check WHERE period = %s "
                           "AND check_name = 'dead_letters'", (PERIOD,)).fetchone()
    assert carried["status"] == "PASS"
    assert carried["detail"] == {"rows": rows, "amount": amounts, "carried": True}
    event = conn.execute("SELECT payload FROM audit.log WHERE event = 'PERIOD_CLOSED' "
                         "ORDER BY seq DESC LIMIT 1").fetchone()["payload"]
    assert event["carried_dead_letters"] == {"rows": rows, "amount": amounts}
    # They stay open in the dead-letter queue.
    assert conn.execute("SELECT count(*) AS n FROM batch.period_dead_letter WHERE period = %s",
                        (PERIOD,)).fetchone()["n"] == rows


def test_closes_are_sequential(conn: psycopg.Connection) -> None:
    for period in (PERIOD, NEXT):
        conn.execute("CALL gl.open_period(%s)", (period,))
    before = written(conn)
    error = refusal(conn, "CALL gl.close_period(%s)", (NEXT,))
    assert error.diag.message_primary == (f"period {NEXT} cannot be closed while an earlier "
                                          f"period is not closed: {PERIOD} (OPEN)")
    assert error.diag.message_hint == (f"Close periods in order: `monthend period close "
                                       f"{PERIOD}` first (open it before if it is FUTURE).")
    assert written(conn) == before
    conn.execute("CALL gl.close_period(%s)", (PERIOD,))
    conn.execute("CALL gl.close_period(%s)", (NEXT,))


def session(target: db.Target) -> psycopg.Connection:
    return psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row)


def wait_until_blocked(conn: psycopg.Connection, pid: int) -> None:
    """Until ``pid`` waits for a lock (a wait, not a sleep, decides the interleaving)."""
    for _ in range(500):
        if conn.execute("SELECT wait_event_type = 'Lock' AS waiting FROM pg_stat_activity "
                        "WHERE pid = %s", (pid,)).fetchone()["waiting"]:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_a_close_waits_for_the_period_lock_and_for_upstream_writes(
        target: db.Target, conn: psycopg.Connection) -> None:
    conn.execute("CALL gl.open_period(%s)", (PERIOD,))
    with session(target) as other:
        # Pre-flight holds the period's lock while it classifies: a close waits for it.
        with other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(batch.period_lock_key(%s))", (PERIOD,))
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '200ms'")
                error = refusal(conn, "CALL gl.close_period(%s)", (PERIOD,))
            assert isinstance(error, errors.LockNotAvailable)
        # An upstream load in flight: the close waits for it, then sees its rows.
        with other.transaction():
            insert_premium(other, 900001, f"{PERIOD}-10")
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '200ms'")
                error = refusal(conn, "CALL gl.close_period(%s)", (PERIOD,))
            assert isinstance(error, errors.LockNotAvailable)
        error = refusal(conn, "CALL gl.close_period(%s)", (PERIOD,))
        assert "subledger_complete" in error.diag.message_primary
        other.execute("DELETE FROM subledger.premium_transaction WHERE txn_id = 900001")

        # A load that starts while the close runs waits for it; its row, dated in
        # the now closed period, is noted for the next run to dead-letter.
        pid = other.info.backend_pid
        with conn.transaction():
            conn.execute("CALL gl.close_period(%s)", (PERIOD,))
            loader = threading.Thread(target=insert_premium, args=(other, 900002,
                                                                   f"{PERIOD}-11"))
            loader.start()
            with session(target) as watcher:
                wait_until_blocked(watcher, pid)
        loader.join(timeout=30)
        assert not loader.is_alive()
    assert status_of(conn, PERIOD) == "CLOSED"
    assert conn.execute("SELECT source_type, source_id FROM subledger.stray_transaction"
                        ).fetchall() == [{"source_type": "PREMIUM", "source_id": 900002}]


# --------------------------------------------------------------------------- balances and seal


def ledger_movement(conn: psycopg.Connection, period: str) -> dict[tuple[str, str], tuple]:
    """Per account and currency, straight from the lines and their headers."""
    rows = conn.execute("""
        SELECT l.account_code, h.currency, count(*) AS lines, sum(l.debit) AS debit,
               sum(l.credit) AS credit, sum(l.functional_debit) AS fd,
               sum(l.functional_credit) AS fc
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h
          ON h.je_id = l.je_id AND h.je_date = l.je_date AND h.batch_id = l.batch_id
        WHERE to_char(l.je_date, 'YYYY-MM') = %s
        GROUP BY 1, 2""", (period,)).fetchall()
    return {(r["account_code"], r["currency"]): (r["lines"], r["debit"], r["credit"], r["fd"],
                                                 r["fc"]) for r in rows}


def balances(conn: psycopg.Connection, period: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["account_code"], r["currency"]): r for r in conn.execute(
        "SELECT * FROM gl.period_balance WHERE period = %s", (period,))}


@pytest.fixture
def two_months(target: db.Target, conn: psycopg.Connection) -> dict[str, Any]:
    """Two consecutive months generated and posted, both still open; their trial
    balances as read from the lines."""
    generate(conn, PERIOD, seed=1)
    first = run(target, PERIOD)
    generate(conn, NEXT, seed=2)
    second = run(target, NEXT)
    return {"batches": {PERIOD: first["batch_id"], NEXT: second["batch_id"]},
            "trial_balance": {p: trial_balance(conn, p) for p in (PERIOD, NEXT)}}


@pytest.mark.full
def test_balances_snapshot_equals_the_lines(two_months: dict[str, Any],
                                            conn: psycopg.Connection) -> None:
    for period in (PERIOD, NEXT):
        conn.execute("CALL gl.close_period(%s)", (period,))
        # The trial balance of a closed period comes from its snapshot and is the one
        # the lines gave.
        assert trial_balance(conn, period) == two_months["trial_balance"][period]

    first, second = balances(conn, PERIOD), balances(conn, NEXT)
    assert len({c for _, c in first}) > 1, "want several transaction currencies"
    for period, snapshot in ((PERIOD, first), (NEXT, second)):
        movement = ledger_movement(conn, period)
        assert {k: (b["lines"], b["debit"], b["credit"], b["functional_debit"],
                    b["functional_credit"]) for k, b in snapshot.items() if b["lines"]} \
            == movement
        for b in snapshot.values():
            assert b["closing"] == b["opening"] + b["debit"] - b["credit"]
            assert b["functional_closing"] == (b["functional_opening"] + b["functional_debit"]
                                               - b["functional_credit"])
    # Openings carry forward, per account and currency, in both currencies.
    assert all(b["opening"] == 0 and b["functional_opening"] == 0 for b in first.values())
    for key, b in second.items():
        carried = first.get(key)
        assert b["opening"] == (carried["closing"] if carried else 0)
        assert b["functional_opening"] == (carried["functional_closing"] if carried else 0)
    assert {k for k, b in first.items() if b["closing"] or b["functional_closing"]} <= set(second)
    # Debit-positive closings of a balanced ledger sum to zero, in each currency.
    for snapshot in (first, second):
        for currency in {c for _, c in snapshot}:
            assert sum(b["closing"] for (_, c), b in snapshot.items() if c == currency) == 0
        assert sum(b["functional_closing"] for b in snapshot.values()) == 0
    # The trial balance's own checks hold from the snapshot too.
    for period in (PERIOD, NEXT):
        assert all(r["balanced"] is not False for r in trial_balance(conn, period))


@pytest.mark.full
def test_the_seal_covers_batches_and_balances(two_months: dict[str, Any], target: db.Target,
                                              conn: psycopg.Connection) -> None:
    for period in (PERIOD, NEXT):
        conn.execute("CALL gl.close_period(%s, false, 'month-end close')", (period,))
    for period in (PERIOD, NEXT):
        row = conn.execute("SELECT * FROM gl.accounting_period WHERE period = %s",
                           (period,)).fetchone()
        assert row["seal_digest"] == conn.execute("SELECT audit.period_seal_digest(%s) AS d",
                                                  (period,)).fetchone()["d"]
        event = conn.execute("SELECT * FROM audit.log WHERE event = 'PERIOD_CLOSED' "
                             "AND payload ->> 'period' = %s", (period,)).fetchone()
        batch_id = two_months["batches"][period]
        digest = conn.execute("SELECT encode(digest, 'hex') AS d FROM batch.run "
                              "WHERE batch_id = %s", (batch_id,)).fetchone()["d"]
        assert event["payload"]["seal_digest"] == row["seal_digest"].hex()
        assert event["payload"]["batches"] == [{"batch_id": batch_id, "digest": digest}]
        assert event["payload"]["balance_rows"] == len(balances(conn, period))
        assert event["payload"]["reason"] == "month-end close"
        assert event["actor"] == conn.info.user
        assert conn.execute("SELECT * FROM audit.verify_period(%s)", (period,)).fetchall() == []
    # The second seal chains to the first.
    text = conn.execute("SELECT seal_digest FROM gl.accounting_period WHERE period = %s",
                        (PERIOD,)).fetchone()["seal_digest"].hex()
    assert conn.execute("SELECT payload ->> 'previous_period' AS p FROM audit.log "
                        "WHERE event = 'PERIOD_CLOSED' AND payload ->> 'period' = %s",
                        (NEXT,)).fetchone()["p"] == PERIOD
    assert text

    # A line changed after the close: the trial balance still answers from the
    # snapshot, and verify_period names the difference.
    tamper(conn, "UPDATE gl.journal_entry_line SET credit = credit + 1 WHERE je_id = "
                 "(SELECT min(je_id) FROM gl.journal_entry_line WHERE credit > 0 "
                 "AND je_date < '2025-02-01') AND credit > 0")
    assert trial_balance(conn, PERIOD) == two_months["trial_balance"][PERIOD]
    problems = conn.execute("SELECT * FROM audit.verify_period(%s)", (PERIOD,)).fetchall()
    assert problems and {p["problem"] for p in problems} == {"BALANCE_DIFFERS"}
    # monthend verify checks every closed period's seal and names the period.
    proc = monthend_cli(target, "verify", "--json", "--no-record")
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert document["periods_verified"] == [PERIOD, NEXT]
    assert {p["problem"] for p in document["period_problems"][PERIOD]} == {"BALANCE_DIFFERS"}
    assert document["period_problems"][NEXT] == []
    # A balance row changed: the seal no longer matches.
    tamper(conn, "UPDATE gl.period_balance SET debit = debit + 1, closing = closing + 1 "
                 "WHERE period = %s AND account_code = (SELECT min(account_code) "
                 "FROM gl.period_balance WHERE period = %s)", (NEXT, NEXT))
    assert {p["problem"] for p in conn.execute("SELECT * FROM audit.verify_period(%s)",
                                               (NEXT,))} == {"SEAL_MISMATCH", "BALANCE_DIFFERS"}


@pytest.mark.full
def test_reopen_only_the_latest_and_the_chain_keeps_the_old_seal(
        two_months: dict[str, Any], conn: psycopg.Connection) -> None:
    for period in (PERIOD, NEXT):
        conn.execute("CALL gl.close_period(%s)", (period,))
    before = written(conn)
    error = refusal(conn, "CALL gl.reopen_period(%s, 'late invoice')", (PERIOD,))
    assert error.diag.message_primary == (f"period {PERIOD} cannot be reopened while a later "
                                          f"period is closed: {NEXT} (CLOSED)")
    assert error.diag.message_hint == (f"Reopen the latest closed period first: `monthend "
                                       f"period reopen {NEXT} --reason TEXT`.")
    assert written(conn) == before

    seal = conn.execute("SELECT seal_digest FROM gl.accounting_period WHERE period = %s",
                        (NEXT,)).fetchone()["seal_digest"]
    rows = len(balances(conn, NEXT))
    conn.execute("CALL gl.reopen_period(%s, 'broker statement arrived late')", (NEXT,))
    row = conn.execute("SELECT * FROM gl.accounting_period WHERE period = %s",
                       (NEXT,)).fetchone()
    assert (row["status"], row["seal_digest"], row["closed_at"]) == ("OPEN", None, None)
    assert balances(conn, NEXT) == {}
    assert conn.execute("SELECT count(*) AS n FROM gl.period_seal_batch WHERE period = %s",
                        (NEXT,)).fetchone()["n"] == 0
    assert len(balances(conn, PERIOD)) > 0
    reopened = last_event(conn)
    assert reopened["event"] == "PERIOD_REOPENED"
    assert reopened["payload"]["reason"] == "broker statement arrived late"
    assert reopened["payload"]["discarded_seal_digest"] == seal.hex()
    assert reopened["payload"]["discarded_balance_rows"] == rows
    assert conn.execute("SELECT count(*) AS n FROM audit.log WHERE event = 'PERIOD_CLOSED' "
                        "AND payload ->> 'seal_digest' = %s", (seal.hex(),)
                        ).fetchone()["n"] == 1
    # Open again: the trial balance reads the lines; nothing changed, so closing
    # again seals the same digest.
    assert trial_balance(conn, NEXT) == two_months["trial_balance"][NEXT]
    conn.execute("CALL gl.close_period(%s)", (NEXT,))
    assert conn.execute("SELECT seal_digest FROM gl.accounting_period WHERE period = %s",
                        (NEXT,)).fetchone()["seal_digest"] == seal
    assert conn.execute("SELECT count(*) AS n FROM audit.verify_chain()").fetchone()["n"] == 0


def test_lock_in_order_and_nothing_changes_a_locked_period(conn: psycopg.Connection) -> None:
    for period in (PERIOD, NEXT):
        conn.execute("CALL gl.open_period(%s)", (period,))
        conn.execute("CALL gl.close_period(%s)", (period,))
    before = written(conn)
    error = refusal(conn, "CALL gl.lock_period(%s)", (NEXT,))
    assert error.diag.message_primary == (f"period {NEXT} cannot be permanently closed while "
                                          f"an earlier period is not: {PERIOD} (CLOSED)")
    assert error.diag.message_hint == (f"Lock periods in order: `monthend period lock "
                                       f"{PERIOD}` first.")
    assert written(conn) == before
    conn.execute("CALL gl.lock_period(%s, 'audited')", (PERIOD,))
    conn.execute("CALL gl.lock_period(%s)", (NEXT,))
    locked = last_event(conn)
    assert locked["event"] == "PERIOD_LOCKED"
    assert locked["payload"]["seal_digest"] == conn.execute(
        "SELECT encode(seal_digest, 'hex') AS s FROM gl.accounting_period WHERE period = %s",
        (NEXT,)).fetchone()["s"]
    for period in (PERIOD, NEXT):
        assert conn.execute("SELECT * FROM audit.verify_period(%s)", (period,)).fetchall() == []


# --------------------------------------------------------------------------- late rows, runs


def insert_premium(conn: psycopg.Connection, txn_id: int, date: str, amount: str = "100.00",
                   currency: str = "USD", line_of_business: str = "HOME") -> None:
    # Written on a policy of its own, incepting on the row's date.
    conn.execute("INSERT INTO subledger.policy VALUES (%s, %s, %s, %s::date + 365)",
                 (txn_id, line_of_business, date, date))
    conn.execute("INSERT INTO subledger.premium_transaction (txn_id, policy_id, payment_date, "
                 "txn_type, line_of_business, amount, currency) "
                 "VALUES (%s, %s, %s, 'RENEWAL', %s, %s, %s)",
                 (txn_id, txn_id, date, line_of_business, Decimal(amount), currency))


@pytest.mark.full
def test_late_rows_are_dead_lettered_period_closed(target: db.Target,
                                                   conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT late_row_policy FROM gl.setting").fetchone() == {
        "late_row_policy": "DEAD_LETTER"}
    # Only the two policies are accepted.
    error = refusal(conn, "UPDATE gl.setting SET late_row_policy = 'NEXT_PERIOD'")
    assert isinstance(error, errors.CheckViolation)
    assert error.diag.constraint_name == "setting_late_row_policy_check"

    generate(conn, PERIOD, txns=30)
    run(target, PERIOD)
    conn.execute("CALL gl.close_period(%s)", (PERIOD,))
    generate(conn, NEXT, txns=30)
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date) "
                 "VALUES ('2025-03', '2025-03-01', '2025-03-31')")
    insert_premium(conn, 900001, f"{PERIOD}-15")     # a closed period's
    insert_premium(conn, 900003, "2025-03-02")       # a FUTURE period's: it waits
    run(target, NEXT)
    conn.execute("CALL gl.close_period(%s)", (NEXT,))
    conn.execute("CALL gl.lock_period(%s)", (PERIOD,))
    generate(conn, "2025-04", txns=30)
    insert_premium(conn, 900002, f"{PERIOD}-16")     # a permanently closed period's
    run(target, "2025-04")

    dead = {r["source_id"]: r for r in conn.execute(
        "SELECT source_id, reason_code, detail FROM batch.dead_letter "
        "WHERE source_id IN (900001, 900002, 900003) AND source_type = 'PREMIUM'")}
    assert set(dead) == {900001, 900002}
    assert dead[900001]["reason_code"] == dead[900002]["reason_code"] == "PERIOD_CLOSED"
    assert dead[900001]["detail"] == f"dated {PERIOD}-15, in closed period {PERIOD}"
    assert dead[900002]["detail"] == f"dated {PERIOD}-16, in permanently closed period {PERIOD}"
    assert conn.execute("SELECT count(*) AS n FROM subledger.stray_transaction "
                        "WHERE source_id = 900003").fetchone()["n"] == 0
    # Once 2025-03 opens, its row is posted by its run.
    conn.execute("CALL gl.open_period('2025-03')")
    run(target, "2025-03")
    assert conn.execute("SELECT count(*) AS n FROM gl.journal_entry_header "
                        "WHERE source_id = 900003 AND source_type = 'PREMIUM'"
                        ).fetchone()["n"] == 3


def late_postings(conn: psycopg.Connection, *ids: int) -> dict[int, list[dict[str, Any]]]:
    """The live postings' headers of these premium rows, by source id."""
    found: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(
            "SELECT h.source_id, h.batch_id, h.je_date, h.source_date, h.period, h.fx_rate, "
            "h.je_number FROM gl.journal_entry_header AS h "
            "WHERE h.source_type = 'PREMIUM' AND h.source_id = ANY (%s) "
            "AND h.reverses_je_id IS NULL AND NOT EXISTS (SELECT FROM "
            "gl.journal_entry_header AS r WHERE r.reverses_je_id = h.je_id) "
            "ORDER BY h.je_id", (list(ids),)):
        found.setdefault(row["source_id"], []).append(row)
    return found


def rule_lines(conn: psycopg.Connection, source_id: int) -> list[tuple]:
    """What the rounding rule gives a premium row, line by line."""
    return [(r["je_seq"], r["line_no"], r["account_code"], r["line_amount"],
             r["line_amount_f"]) for r in conn.execute(
        "SELECT je_seq, line_no, account_code, line_amount, line_amount_f "
        "FROM gl.journal_line_amount WHERE source_type = 'PREMIUM' AND source_id = %s "
        "ORDER BY je_seq, line_no", (source_id,))]


def posted_lines(conn: psycopg.Connection, source_id: int) -> list[tuple]:
    return [(r["je_seq"], r["line_no"], r["account_code"], r["amount"], r["amount_f"])
            for r in conn.execute(
        "SELECT h.je_seq, l.line_no, l.account_code, l.debit + l.credit AS amount, "
        "l.functional_debit + l.functional_credit AS amount_f "
        "FROM gl.journal_entry_header AS h JOIN gl.journal_entry_line AS l "
        "USING (je_id, je_date, batch_id) WHERE h.source_type = 'PREMIUM' "
        "AND h.source_id = %s AND h.reverses_je_id IS NULL ORDER BY h.je_seq, l.line_no",
        (source_id,))]


@pytest.mark.full
def test_late_rows_are_posted_in_the_next_open_period(target: db.Target,
                                                      conn: psycopg.Connection,
                                                      tmp_path: Any) -> None:
    generate(conn, PERIOD, txns=30)
    run(target, PERIOD)
    insert_premium(conn, 900010, f"{PERIOD}-20", line_of_business="PETS")   # LOB unknown
    first_dead = run(target, PERIOD)
    assert first_dead["dead_letter_rows"] == 1
    conn.execute("CALL gl.close_period(%s, true)", (PERIOD,))    # carried
    conn.execute("UPDATE gl.setting SET late_row_policy = 'NEXT_OPEN_PERIOD'")
    foreign = conn.execute("SELECT currency, rate FROM gl.fx_rate WHERE period = %s "
                           "AND currency <> (SELECT functional_currency FROM gl.setting) "
                           "ORDER BY currency LIMIT 1", (PERIOD,)).fetchone()

    generate(conn, NEXT, txns=30, seed=2)
    conn.execute("CALL gl.open_period('2025-03', 'test')")
    insert_premium(conn, 900001, f"{PERIOD}-15")                             # late
    insert_premium(conn, 900002, f"{PERIOD}-16", "250.00", foreign["currency"])
    insert_premium(conn, 900003, f"{PERIOD}-17", "0")                        # late and bad
    conn.execute("INSERT INTO gl.line_of_business (code, name) "
                 "VALUES ('PETS', 'Pet insurance')")                         # fixed upstream
    # The run of a later open period leaves them to the first open one after theirs.
    march = run(target, "2025-03")
    assert march["posted_rows"] == 0
    assert conn.execute("SELECT count(*) AS n FROM subledger.stray_transaction "
                        "WHERE source_id IN (900001, 900002, 900003)").fetchone()["n"] == 3

    february = run(target, NEXT)
    own_rows = conn.execute("SELECT count(*) AS n FROM batch.source_claim WHERE period = %s "
                            "AND batch_id = %s", (NEXT, february["batch_id"])).fetchone()["n"]
    assert february["posted_rows"] == own_rows + 3                # 900001, 900002, 900010
    batch = conn.execute("SELECT late_periods, je_count FROM batch.run WHERE batch_id = %s",
                         (february["batch_id"],)).fetchone()
    assert batch["late_periods"] == [PERIOD]
    # Claimed in their own period's partition, posted by February's batch.
    claims = conn.execute("SELECT source_id, period, batch_id, generation FROM "
                          "batch.source_claim WHERE source_id IN (900001, 900002, 900010) "
                          "AND source_type = 'PREMIUM' ORDER BY source_id").fetchall()
    assert [(c["period"], c["batch_id"], c["generation"]) for c in claims] == \
        [(PERIOD, february["batch_id"], 0)] * 3
    postings = late_postings(conn, 900001, 900002, 900010)
    for source_id, day in ((900001, 15), (900002, 16), (900010, 20)):
        entries = postings[source_id]
        assert len(entries) == 3
        assert {(e["batch_id"], e["period"], str(e["je_date"]), str(e["source_date"]))
                for e in entries} == {(february["batch_id"], NEXT, f"{NEXT}-01",
                                       f"{PERIOD}-{day}")}
        assert posted_lines(conn, source_id) == rule_lines(conn, source_id)
    # Its own period's FX rate, the rounding rule's.
    assert {e["fx_rate"] for e in postings[900002]} == {foreign["rate"]}
    # After the period's own entries, in the period's one sequence.
    numbers = [r["je_number"] for r in conn.execute(
        "SELECT je_number FROM gl.journal_entry_header WHERE batch_id = %s ORDER BY je_id",
        (february["batch_id"],))]
    assert numbers == sorted(numbers) and len(numbers) == batch["je_count"]
    assert numbers[-9:] == sorted(e["je_number"] for p in postings.values() for e in p)
    # The bad late row is dead-lettered by February's run; the carried dead
    # letter its row now posts is resolved.
    dead = conn.execute("SELECT reason_code, batch_id, status FROM batch.dead_letter "
                        "WHERE source_id = 900003 AND source_type = 'PREMIUM'").fetchall()
    assert dead == [{"reason_code": "AMOUNT_ZERO", "batch_id": february["batch_id"],
                     "status": "OPEN"}]
    assert conn.execute("SELECT status, resolved_by_batch FROM batch.dead_letter "
                        "WHERE source_id = 900010 AND source_type = 'PREMIUM'"
                        ).fetchone() == {"status": "RESOLVED",
                                         "resolved_by_batch": february["batch_id"]}
    # The large-transaction report of the row's own period finds its posting.
    report = {r["source_id"]: r for r in conn.execute(
        "SELECT * FROM gl.large_transaction_report(%s, 0) WHERE source_type = 'PREMIUM' "
        "AND source_id IN (900001, 900002, 900010)", (PERIOD,))}
    assert {r["status"] for r in report.values()} == {"POSTED"}
    assert report[900001]["first_je_number"] == postings[900001][0]["je_number"]

    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    conn.execute(f"CALL gl.close_period('{NEXT}', true)")
    assert status_of(conn, NEXT) == "CLOSED"

    # Reversed (in March: February is closed now), a late row is late again:
    # the first open period after January is March, whose next run posts it.
    ids = tmp_path / "ids.csv"
    ids.write_text("source_type,source_id\nPREMIUM,900001\n")
    reversal = monthend_cli(target, "reverse", str(february["batch_id"]), "--reason",
                            "RULE_ERROR", "--period", "2025-03", "--source-ids", str(ids),
                            "--json")
    assert reversal.returncode == 0, reversal.stdout + reversal.stderr
    again = run(target, "2025-03")
    assert again["posted_rows"] == 1
    reposted = late_postings(conn, 900001)[900001]
    assert {(e["batch_id"], str(e["je_date"]), str(e["source_date"])) for e in reposted} == \
        {(again["batch_id"], "2025-03-01", f"{PERIOD}-15")}
    assert conn.execute("SELECT generation FROM batch.source_claim WHERE source_id = 900001 "
                        "AND source_type = 'PREMIUM' AND batch_id = %s",
                        (again["batch_id"],)).fetchone()["generation"] == 1
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The source date is sealed: changed, the batch no longer verifies.
    tamper(conn, "UPDATE gl.journal_entry_header SET source_date = source_date - 1 "
                 "WHERE batch_id = %s", (again["batch_id"],))
    problems = conn.execute("SELECT problem FROM audit.verify_batch(%s)",
                            (again["batch_id"],)).fetchall()
    assert "RANGE_DIGEST_MISMATCH" in {p["problem"] for p in problems}


@pytest.mark.parametrize("status", ["absent", "FUTURE", "CLOSED", "PERMANENTLY_CLOSED"])
def test_runs_are_refused_on_a_period_that_is_not_open(target: db.Target,
                                                       conn: psycopg.Connection,
                                                       status: str) -> None:
    bring_to(conn, SPARE, status)
    proc = monthend_cli(target, "run", "--period", SPARE)
    assert proc.returncode == 2, proc.stderr
    what_to_do = {
        "absent": "accounting period 2030-05 does not exist\n"
                  "Open it with `monthend period open 2030-05`.",
        "FUTURE": "accounting period 2030-05 is FUTURE, nothing can be posted to it\n"
                  "Open it with `monthend period open 2030-05`.",
        "CLOSED": "accounting period 2030-05 is CLOSED, nothing can be posted to it\n"
                  "Post the correction in an open period, or reopen it with `monthend period "
                  "reopen 2030-05 --reason TEXT`; rows dated in it are dead-lettered "
                  "PERIOD_CLOSED.",
        "PERMANENTLY_CLOSED": "accounting period 2030-05 is PERMANENTLY_CLOSED, nothing can "
                              "be posted to it\nIt is PERMANENTLY_CLOSED, which is final: post "
                              "the correction in an open period; rows dated in it are "
                              "dead-lettered PERIOD_CLOSED."}[status]
    assert proc.stderr.strip() == f"monthend: {what_to_do}"
    assert conn.execute("SELECT count(*) AS n FROM batch.run").fetchone()["n"] == 0


def test_preflight_gate_refuses_a_period_that_is_not_open(conn: psycopg.Connection) -> None:
    """A batch that reached pre-flight while its period was not OPEN (written here
    straight into batch.run) fails the period_open gate, saying what to do."""
    bring_to(conn, SPARE, "CLOSED")
    batch_id = conn.execute("INSERT INTO batch.run (period, workers, range_size, max_attempts) "
                            "VALUES (%s, 1, 100, 1) RETURNING batch_id",
                            (SPARE,)).fetchone()["batch_id"]
    conn.execute("CALL batch.preflight(%s)", (batch_id,))
    run_row = conn.execute("SELECT status, error FROM batch.run WHERE batch_id = %s",
                           (batch_id,)).fetchone()
    assert run_row["status"] == "FAILED"
    assert run_row["error"] == (
        "pre-flight refused the batch: period 2030-05 is CLOSED. Post the correction in an "
        "open period, or reopen it with `monthend period reopen 2030-05 --reason TEXT`; rows "
        "dated in it are dead-lettered PERIOD_CLOSED.")


# --------------------------------------------------------------------------- the CLI


def test_period_commands(target: db.Target, conn: psycopg.Connection) -> None:
    listed, _ = period_cli(target, "list")
    assert listed == {"periods": []}

    opened, _ = period_cli(target, "open", PERIOD, "--reason", "January")
    assert (opened["period"], opened["status"], opened["status_reason"]) == (
        PERIOD, "OPEN", "January")
    assert opened["fx_rates"] == 0 and opened["seal_digest"] is None
    again, _ = period_cli(target, "open", PERIOD, expect=2)
    assert again == {"status": "ERROR", "exit_code": 2,
                     "error": f"period {PERIOD} is already OPEN\nNothing to do."}

    closed, _ = period_cli(target, "close", PERIOD, "--reason", "month end")
    assert closed["status"] == "CLOSED" and len(closed["seal_digest"]) == 64
    assert (closed["batches_committed"], closed["balance_rows"], closed["batches"]) == (0, 0, [])
    assert [(c["check_name"], c["status"]) for c in closed["checks"]] == [
        ("period_open", "PASS"), ("earlier_periods_closed", "PASS"),
        ("no_active_batch", "PASS"), ("subledger_complete", "PASS"),
        ("period_end_posted", "PASS"), ("ledger_balanced", "PASS"),
        ("ledger_matches_batches", "PASS"), ("dead_letters", "PASS")]
    assert closed["status_detail"]["seal_digest"] == closed["seal_digest"]

    proc = monthend_cli(target, "period", "reopen", PERIOD)
    assert proc.returncode == 2 and "--reason" in proc.stderr
    reopened, _ = period_cli(target, "reopen", PERIOD, "--reason", "late invoice")
    assert reopened["status"] == "OPEN" and reopened["seal_digest"] is None
    assert reopened["status_detail"]["discarded_seal_digest"] == closed["seal_digest"]
    period_cli(target, "close", PERIOD)
    locked, _ = period_cli(target, "lock", PERIOD)
    assert locked["status"] == "PERMANENTLY_CLOSED"
    assert locked["seal_digest"] == closed["seal_digest"]
    final, _ = period_cli(target, "reopen", PERIOD, "--reason", "x", expect=2)
    assert final["error"] == (f"period {PERIOD} is PERMANENTLY_CLOSED: nothing may change it\n"
                              "Post corrections in an open period.")

    # Rows loaded and not yet run: the close is refused (exit 2) with every check.
    generate(conn, NEXT, txns=20)
    refused, stderr = period_cli(target, "close", NEXT, expect=2)
    assert refused["period"] == NEXT and refused["exit_code"] == 2
    assert [c["check_name"] for c in refused["checks"]] == [
        "period_open", "earlier_periods_closed", "no_active_batch", "subledger_complete",
        "period_end_posted", "ledger_balanced", "ledger_matches_batches", "dead_letters"]
    assert [c["check_name"] for c in refused["checks"] if not c["passed"]] == [
        "subledger_complete"]
    assert refused["checks"][3]["detail"]["unposted_rows"] == 20
    assert all(isinstance(v, str) for v in refused["checks"][3]["detail"]["unposted_amount"]
               .values())
    assert stderr.startswith(f"monthend: period {NEXT} cannot be closed: subledger_complete")
    assert stderr.rstrip().endswith(f"`monthend run --period {NEXT}`.")

    listed, _ = period_cli(target, "list")
    assert [(p["period"], p["status"], p["seal_digest"]) for p in listed["periods"]] == [
        (PERIOD, "PERMANENTLY_CLOSED", closed["seal_digest"]), (NEXT, "OPEN", None)]
    text = monthend_cli(target, "period", "list", check=True).stdout
    assert PERIOD in text and "PERMANENTLY_CLOSED" in text
    bad = monthend_cli(target, "period", "open", "2025-13")
    assert bad.returncode == 2 and "is not a period of the form YYYY-MM" in bad.stderr


def test_the_auditor_cannot_change_a_period(target: db.Target,
                                            conn: psycopg.Connection) -> None:
    conn.execute("CALL gl.open_period(%s)", (PERIOD,))
    before = written(conn)
    auditor = db.Target(f"{target.conninfo} options='-c role=monthend_auditor'", "--dsn")
    for args in (["open", NEXT], ["close", PERIOD], ["reopen", PERIOD, "--reason", "x"],
                 ["lock", PERIOD]):
        proc = monthend_cli(auditor, "period", *args)
        assert proc.returncode == 2, proc.stderr
        assert "permission denied for procedure" in proc.stderr
    # It may look: the list and the closing checks are read only.
    assert monthend_cli(auditor, "period", "list", "--json", check=True)
    assert written(conn) == before
    # The runner (the scheduler's role) runs the month: open, close.
    runner = db.Target(f"{target.conninfo} options='-c role=monthend_runner'", "--dsn")
    period_cli(runner, "close", PERIOD)
    period_cli(runner, "open", NEXT)
