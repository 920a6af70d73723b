"""Every transition of a period enters the audit chain, with who, when and why,
whoever makes it; a transition rolled back leaves no event."""

from __future__ import annotations

import psycopg


def last_event(conn: psycopg.Connection) -> dict:
    return conn.execute("SELECT * FROM audit.log ORDER BY seq DESC LIMIT 1").fetchone()


def test_period_transitions_are_chained_events(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date) "
                 "VALUES ('2030-02', '2030-02-01', '2030-02-28')")
    created = last_event(conn)
    assert created["event"] == "PERIOD_CREATED"
    assert created["payload"] == {"period": "2030-02", "status": "FUTURE", "status_was": None,
                                  "reason": None, "je_numbers_used": 0}

    conn.execute("CALL gl.open_period('2030-02', 'February opens')")
    opened = last_event(conn)
    assert opened["seq"] == created["seq"] + 1
    assert opened["event"] == "PERIOD_OPENED"
    assert opened["payload"] == {"period": "2030-02", "status": "OPEN", "status_was": "FUTURE",
                                 "reason": "February opens", "je_numbers_used": 0,
                                 "opened_from": "FUTURE"}
    assert opened["actor"] == conn.info.user

    conn.execute("CALL gl.close_period('2030-02', false, 'month end')")
    closed = last_event(conn)
    seal = conn.execute("SELECT encode(seal_digest, 'hex') AS s FROM gl.accounting_period "
                        "WHERE period = '2030-02'").fetchone()["s"]
    assert closed["event"] == "PERIOD_CLOSED"
    assert closed["payload"] == {"period": "2030-02", "status": "CLOSED", "status_was": "OPEN",
                                 "reason": "month end", "je_numbers_used": 0,
                                 "seal_digest": seal, "previous_period": None, "batches": [],
                                 "balance_rows": 0, "carried_dead_letters": None}

    # A change that is no change of status writes no event.
    conn.execute("UPDATE gl.accounting_period SET status = 'CLOSED' WHERE period = '2030-02'")
    assert last_event(conn)["seq"] == closed["seq"]

    conn.execute("CALL gl.reopen_period('2030-02', 'a late invoice')")
    reopened = last_event(conn)
    assert reopened["event"] == "PERIOD_REOPENED"
    assert reopened["payload"]["status_was"] == "CLOSED"
    assert reopened["payload"]["reason"] == "a late invoice"
    assert reopened["payload"]["discarded_seal_digest"] == seal

    # A close rolled back leaves no event: the event is part of the change.
    with conn.transaction(force_rollback=True):
        conn.execute("CALL gl.close_period('2030-02')")
        assert last_event(conn)["event"] == "PERIOD_CLOSED"
    assert last_event(conn)["seq"] == reopened["seq"]

    conn.execute("CALL gl.close_period('2030-02')")
    conn.execute("CALL gl.lock_period('2030-02', 'audit signed off')")
    locked = last_event(conn)
    assert locked["event"] == "PERIOD_LOCKED"
    assert locked["payload"]["reason"] == "audit signed off"
    assert locked["payload"]["seal_digest"] == seal
    assert conn.execute("SELECT count(*) AS n FROM audit.verify_chain()").fetchone()["n"] == 0
