"""Closing and reopening a period enter the audit chain, whoever changes it."""

from __future__ import annotations

import psycopg


def last_event(conn: psycopg.Connection) -> dict:
    return conn.execute("SELECT * FROM audit.log ORDER BY seq DESC LIMIT 1").fetchone()


def test_closing_and_reopening_a_period_are_chained_events(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date) "
                 "VALUES ('2030-02', '2030-02-01', '2030-02-28')")
    before = last_event(conn)

    conn.execute("UPDATE gl.accounting_period SET status = 'CLOSED', closed_at = now() "
                 "WHERE period = '2030-02'")
    closed = last_event(conn)
    assert closed["seq"] == before["seq"] + 1
    assert closed["event"] == "PERIOD_CLOSED"
    assert closed["payload"] == {"period": "2030-02", "status": "CLOSED", "status_was": "OPEN",
                                 "je_numbers_used": 0}
    assert closed["actor"] == conn.info.user

    # Other columns change without an event; the same status again is no change.
    conn.execute("UPDATE gl.accounting_period SET je_numbers_used = 5, status = 'CLOSED' "
                 "WHERE period = '2030-02'")
    assert last_event(conn)["seq"] == closed["seq"]

    conn.execute("UPDATE gl.accounting_period SET status = 'OPEN' WHERE period = '2030-02'")
    reopened = last_event(conn)
    assert reopened["event"] == "PERIOD_REOPENED"
    assert reopened["payload"]["status_was"] == "CLOSED"
    assert reopened["payload"]["je_numbers_used"] == 5

    # A close rolled back leaves no event: the event is part of the change.
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE gl.accounting_period SET status = 'CLOSED' "
                     "WHERE period = '2030-02'")
    assert last_event(conn)["seq"] == reopened["seq"]
    assert conn.execute("SELECT count(*) AS n FROM audit.verify_chain()").fetchone()["n"] == 0
