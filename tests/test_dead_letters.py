"""Dead letters: every reason pre-flight can give lands in batch.dead_letter
with a detail, the run still commits, posted + dead-lettered reconciles with the
source, and a row whose cause is fixed is posted by the next run of the period."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from conftest import monthend_cli

# Each test is a whole generated run through the CLI: the full tier.
pytestmark = pytest.mark.full

PERIOD = "2025-01"
CLOSED_PERIOD = "2024-12"
NEXT_PERIOD = "2025-02"
# The generator's default rates (procedures/generate_transactions.sql); the rows
# crafted below depend on EUR's.
EUR_RATE = Decimal("1.0842")

# Crafted rows: (source_type, id, txn_type, currency, amount, date, expected reason).
CRAFTED = [
    # 100.25 * 0.5 = 50.125 -> 50.13 twice: 100.26 credited against 100.25 debited.
    ("PREMIUM", 900001, "RT_PAIR", "USD", "100.25", f"{PERIOD}-10", "BALANCING_NEGATIVE"),
    # Exact in EUR (50.03 twice), but A_f = round(100.06 * 1.0842, 2) = 108.49 and
    # 54.245 -> 54.25 twice: negative in functional currency only.
    ("CLAIM", 900002, "RT_PAIR", "EUR", "100.06", f"{PERIOD}-11", "BALANCING_NEGATIVE"),
    # A zero balancing line is not a negative one: posted.
    ("PREMIUM", 900003, "RT_PAIR", "USD", "100.00", f"{PERIOD}-12", None),
    # Dated in a closed period.
    ("PREMIUM", 900004, "NEW_BUSINESS", "USD", "250.00", f"{CLOSED_PERIOD}-15", "PERIOD_CLOSED"),
    # No date at all.
    ("CLAIM", 900005, "LOSS_PAYMENT", "USD", "75.00", None, "DATE_MISSING"),
    # Dated in the next, open period: not this run's business.
    ("PREMIUM", 900006, "RENEWAL", "USD", "80.00", f"{NEXT_PERIOD}-03", None),
    # Written on a policy that is not in subledger.policy.
    ("PREMIUM", 900007, "NEW_BUSINESS", "USD", "60.00", f"{PERIOD}-13", "POLICY_UNKNOWN"),
    # Dated before its policy's inception.
    ("PREMIUM", 900008, "ENDORSEMENT", "USD", "40.00", f"{PERIOD}-02", "OUTSIDE_POLICY_TERM"),
]
# The crafted rows' policy (in force from a year before to a year after), but for
# the two whose policy is the point.
CRAFTED_POLICY = 990001
CRAFTED_POLICIES = {900007: 990404, 900008: 990002}
NEXT_PERIOD_ID = 900006

# Independent of preflight: the single defect each spoiled row carries, in the
# order of precedence a row with several would be judged by.
EXPECTED_REASON_SQL = """
WITH src AS (
    SELECT 'PREMIUM' AS source_type, txn_id AS source_id, policy_id, payment_date AS txn_date,
           txn_type, line_of_business, amount, currency
    FROM subledger.premium_transaction
    UNION ALL
    SELECT 'CLAIM', claim_id, policy_id, claim_date, txn_type, line_of_business, amount,
           currency
    FROM subledger.claims_transaction
)
SELECT s.source_type, s.source_id, s.amount,
       CASE WHEN s.txn_date IS NULL THEN 'DATE_MISSING'
            WHEN ap.status = 'CLOSED' THEN 'PERIOD_CLOSED'
            WHEN ap.period IS NULL THEN 'DATE_OUTSIDE_PERIOD'
            WHEN s.policy_id IS NULL THEN 'POLICY_MISSING'
            WHEN s.source_type = 'PREMIUM' AND pol.policy_id IS NULL THEN 'POLICY_UNKNOWN'
            WHEN s.source_type = 'PREMIUM' AND NOT (s.txn_date >= pol.inception_date
                                                    AND s.txn_date < pol.expiry_date)
                THEN 'OUTSIDE_POLICY_TERM'
            WHEN s.amount IS NULL THEN 'AMOUNT_NULL'
            WHEN s.amount = 0 THEN 'AMOUNT_ZERO'
            WHEN s.amount < 0 THEN 'AMOUNT_NEGATIVE'
            WHEN c.code IS NULL THEN 'CURRENCY_UNKNOWN'
            WHEN s.amount <> round(s.amount, c.minor_units) THEN 'AMOUNT_PRECISION'
            WHEN s.line_of_business NOT IN (SELECT code FROM gl.line_of_business)
                THEN 'LINE_OF_BUSINESS_UNKNOWN'
            WHEN NOT EXISTS (SELECT FROM gl.posting_rule AS r
                             WHERE r.source_type = s.source_type AND r.txn_type = s.txn_type)
                THEN 'TXN_TYPE_UNKNOWN'
            WHEN s.currency <> 'USD' AND NOT EXISTS (
                    SELECT FROM gl.fx_rate AS fx
                    WHERE fx.period = ap.period AND fx.currency = s.currency)
                THEN 'FX_RATE_MISSING'
       END AS reason,
       ap.period
FROM src AS s
LEFT JOIN gl.currency AS c ON c.code = s.currency
LEFT JOIN gl.accounting_period AS ap ON s.txn_date BETWEEN ap.start_date AND ap.end_date
LEFT JOIN subledger.policy AS pol ON pol.policy_id = s.policy_id
"""


def reason_codes(conn) -> set[str]:
    """Every reason code the schema allows, read from the dead-letter CHECK."""
    definition = conn.execute(
        "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint "
        "WHERE conname = 'dead_letter_reason_code_check'").fetchone()["d"]
    return set(re.findall(r"'([A-Z_]+)'", definition))


def insert_source(conn, source_type, source_id, txn_type, currency, amount, txn_date):
    table, id_col, date_col = (("subledger.premium_transaction", "txn_id", "payment_date")
                               if source_type == "PREMIUM" else
                               ("subledger.claims_transaction", "claim_id", "claim_date"))
    year = int(PERIOD[:4])
    conn.execute("INSERT INTO subledger.policy VALUES (%s, 'HOME', %s, %s), "
                 "(%s, 'HOME', %s, %s) ON CONFLICT DO NOTHING",
                 (CRAFTED_POLICY, f"{year - 1}-01-01", f"{year + 1}-12-31",
                  990002, f"{PERIOD}-05", f"{year + 1}-01-05"))
    conn.execute(f"INSERT INTO {table} ({id_col}, policy_id, {date_col}, txn_type, "
                 "line_of_business, amount, currency) VALUES (%s, %s, %s, %s, 'HOME', %s, %s)",
                 (source_id, CRAFTED_POLICIES.get(source_id, CRAFTED_POLICY), txn_date,
                  txn_type, Decimal(amount), currency))


def add_period(conn, period: str, status: str = "OPEN") -> None:
    # A period is closed only through its lifecycle (checks, balances, seal).
    conn.execute("CALL gl.open_period(%s)", (period,))
    if status == "CLOSED":
        conn.execute("CALL gl.close_period(%s)", (period,))


def spoil_period(target, conn, txns: int = 1500) -> None:
    """A generated period with every kind of bad row the generator makes, the CAD
    rate missing, and the crafted rows above."""
    proc = monthend_cli(target, "generate", "--period", PERIOD, "--txns", str(txns),
                        "--bad-rows", "0.2", "--seed", "3", "--json", check=True)
    assert json.loads(proc.stdout)["bad_rows"] > 0
    conn.execute("DELETE FROM gl.fx_rate WHERE period = %s AND currency = 'CAD'", (PERIOD,))
    add_period(conn, CLOSED_PERIOD, "CLOSED")
    add_period(conn, NEXT_PERIOD)
    # Debit the whole amount, credit half twice: the balancing line gets what
    # rounding leaves, which can be below zero.
    with conn.transaction():
        for source_type in ("PREMIUM", "CLAIM"):
            conn.execute("INSERT INTO gl.journal_template VALUES (%s, 'RT_PAIR', 1, 'halves')",
                         (source_type,))
            conn.execute(
                "INSERT INTO gl.posting_rule (source_type, txn_type, je_seq, line_no, "
                "account_code, side, ratio) VALUES (%(t)s, 'RT_PAIR', 1, 1, '1200', 'D', 1.0), "
                "(%(t)s, 'RT_PAIR', 1, 2, '2300', 'C', 0.5), "
                "(%(t)s, 'RT_PAIR', 1, 3, '2400', 'C', 0.5), "
                "(%(t)s, 'RT_PAIR', 1, 4, '2100', 'C', NULL)", {"t": source_type})
    for source_type, source_id, txn_type, currency, amount, txn_date, _ in CRAFTED:
        insert_source(conn, source_type, source_id, txn_type, currency, amount, txn_date)


def expected_reasons(conn) -> dict[tuple[str, int], str | None]:
    """Every source row this run of PERIOD must judge: its expected reason, None
    for a row that must be posted."""
    rows = conn.execute(EXPECTED_REASON_SQL).fetchall()
    expected = {(r["source_type"], r["source_id"]): r["reason"] for r in rows
                if r["period"] == PERIOD or r["reason"] in
                ("DATE_MISSING", "PERIOD_CLOSED", "DATE_OUTSIDE_PERIOD")}
    for source_type, source_id, *_, reason in CRAFTED:
        if reason == "BALANCING_NEGATIVE":
            expected[(source_type, source_id)] = reason
    return expected


def run(target, *extra: str):
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2",
                        "--range-size", "250", "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    return result


def test_every_reason_code_is_dead_lettered_and_the_run_commits(target, conn):
    spoil_period(target, conn)
    expected = expected_reasons(conn)
    result = run(target)
    batch_id = result["batch_id"]

    dead = conn.execute("SELECT source_type, source_id, reason_code, detail, status, amount, "
                        "currency FROM batch.dead_letter WHERE batch_id = %s",
                        (batch_id,)).fetchall()
    actual = {(d["source_type"], d["source_id"]): d["reason_code"] for d in dead}
    assert len(actual) == len(dead)
    assert actual == {k: v for k, v in expected.items() if v is not None}
    assert {d["reason_code"] for d in dead} == reason_codes(conn), \
        "a reason code of the schema is not exercised"
    assert all(d["status"] == "OPEN" and d["detail"].strip() for d in dead)

    details = {(d["source_type"], d["source_id"]): d["detail"] for d in dead}
    assert "2024-12" in details[("PREMIUM", 900004)]
    assert "100.25" in details[("PREMIUM", 900001)]
    assert "100.06" in details[("CLAIM", 900002)]
    for d in dead:
        if d["reason_code"] == "FX_RATE_MISSING":
            assert "CAD" in d["detail"] and PERIOD in d["detail"]

    by_reason: dict[str, int] = {}
    for code in actual.values():
        by_reason[code] = by_reason.get(code, 0) + 1
    assert result["dead_letters_by_reason"] == by_reason
    assert result["dead_letter_rows"] == len(dead)
    assert result["posted_rows"] == sum(1 for v in expected.values() if v is None)

    # The crafted zero-balancing row is posted; the next period's row is untouched.
    posted = {(r["source_type"], r["source_id"]) for r in conn.execute(
        "SELECT DISTINCT source_type, source_id FROM gl.journal_entry_header").fetchall()}
    assert ("PREMIUM", 900003) in posted
    assert ("PREMIUM", NEXT_PERIOD_ID) not in posted
    assert ("PREMIUM", NEXT_PERIOD_ID) not in actual
    assert posted == {k for k, v in expected.items() if v is None}

    proc = monthend_cli(target, "dlq", "list", "--limit", "10000", "--json", check=True)
    listing = json.loads(proc.stdout)
    listed = {(r["source_type"], r["source_id"]): r for r in listing["rows"]}
    assert {k: r["reason_code"] for k, r in listed.items()} == actual
    assert all(r["batch_id"] == batch_id and r["detail"] for r in listed.values())
    assert {r["reason_code"]: r["rows"] for r in listing["by_reason"]} == by_reason


def test_posted_plus_dead_lettered_reconciles_with_source(target, conn):
    spoil_period(target, conn)
    # What the run must account for, taken from the source tables before it runs:
    # the period's rows, and rows no open period can take.
    source = conn.execute("""
        WITH src AS (
            SELECT payment_date AS txn_date, amount FROM subledger.premium_transaction
            UNION ALL
            SELECT claim_date, amount FROM subledger.claims_transaction
        )
        SELECT count(*) AS n, coalesce(sum(amount), 0) AS amount FROM src AS s
        WHERE to_char(s.txn_date, 'YYYY-MM') = %s
           OR NOT EXISTS (SELECT FROM gl.accounting_period AS ap
                          WHERE ap.status = 'OPEN'
                            AND s.txn_date BETWEEN ap.start_date AND ap.end_date)
    """, (PERIOD,)).fetchone()
    result = run(target)
    batch_id = result["batch_id"]

    checks = {r["check_name"]: r for r in conn.execute(
        "SELECT check_name, status, expected, actual FROM batch.validation_result "
        "WHERE batch_id = %s AND phase = 'pre-commit'", (batch_id,)).fetchall()}
    for name in ("reconciliation_count", "reconciliation_amount", "debits_equal_credits",
                 "numbering_gapless", "claims_posted_once"):
        assert checks[name]["status"] == "PASS", checks[name]
    # The one failed check is pre-flight's note of the missing rate, which
    # dead-letters rows rather than stopping the run.
    failed = conn.execute("SELECT phase, check_name FROM batch.validation_result "
                          "WHERE batch_id = %s AND status = 'FAIL'", (batch_id,)).fetchall()
    assert failed == [{"phase": "preflight", "check_name": "fx_rates_present"}]

    # The same reconciliation, recomputed from the ledger, the dead letters and
    # the source tables' own amounts.
    outcome = conn.execute("""
        WITH src AS (
            SELECT 'PREMIUM' AS source_type, txn_id AS source_id, amount
            FROM subledger.premium_transaction
            UNION ALL
            SELECT 'CLAIM', claim_id, amount FROM subledger.claims_transaction
        ), posted AS (
            SELECT DISTINCT h.source_type, h.source_id
            FROM gl.journal_entry_header AS h WHERE h.batch_id = %(b)s
        ), dead AS (
            SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
            WHERE d.batch_id = %(b)s
        ), outcome AS (
            SELECT source_type, source_id FROM posted
            UNION ALL
            SELECT source_type, source_id FROM dead
        )
        SELECT (SELECT count(*) FROM posted) AS posted,
               (SELECT count(*) FROM dead) AS dead,
               (SELECT count(*) FROM (SELECT source_type, source_id FROM posted
                                      INTERSECT SELECT source_type, source_id FROM dead) AS x)
                   AS both_ways,
               count(*) AS n, coalesce(sum(s.amount), 0) AS amount
        FROM outcome AS o
        JOIN src AS s ON s.source_type = o.source_type AND s.source_id = o.source_id
    """, {"b": batch_id}).fetchone()
    assert outcome["both_ways"] == 0
    assert outcome["n"] == source["n"] == outcome["posted"] + outcome["dead"]
    assert outcome["amount"] == source["amount"]
    assert result["source_rows"] == source["n"]
    assert result["posted_rows"] == outcome["posted"]
    assert result["dead_letter_rows"] == outcome["dead"]


def test_fixed_fx_rate_posts_exactly_the_dead_lettered_rows(target, conn):
    spoil_period(target, conn, txns=1000)
    first = run(target)
    fx_rows = {(r["source_type"], r["source_id"]) for r in conn.execute(
        "SELECT source_type, source_id FROM batch.dead_letter "
        "WHERE batch_id = %s AND reason_code = 'FX_RATE_MISSING'",
        (first["batch_id"],)).fetchall()}
    assert fx_rows
    open_before = conn.execute("SELECT count(*) AS n FROM batch.dead_letter WHERE status = 'OPEN'"
                               ).fetchone()["n"]

    conn.execute("INSERT INTO gl.fx_rate (period, currency, rate) VALUES (%s, 'CAD', 0.7413)",
                 (PERIOD,))
    second = run(target)
    assert second["posted_rows"] == len(fx_rows)
    assert "FX_RATE_MISSING" not in second["dead_letters_by_reason"]

    posted = {(r["source_type"], r["source_id"]) for r in conn.execute(
        "SELECT DISTINCT source_type, source_id FROM gl.journal_entry_header WHERE batch_id = %s",
        (second["batch_id"],)).fetchall()}
    assert posted == fx_rows
    assert conn.execute("SELECT count(*) AS n FROM gl.journal_entry_header WHERE batch_id = %s",
                        (second["batch_id"],)).fetchone()["n"] == second["journal_entries"]

    letters = conn.execute(
        "SELECT source_type, source_id, status, resolved_by_batch FROM batch.dead_letter "
        "WHERE batch_id = %s", (first["batch_id"],)).fetchall()
    for d in letters:
        if (d["source_type"], d["source_id"]) in fx_rows:
            assert (d["status"], d["resolved_by_batch"]) == ("RESOLVED", second["batch_id"])
        else:
            assert (d["status"], d["resolved_by_batch"]) == ("OPEN", None)
    # Nothing else was resolved, and the queue no longer lists the posted rows.
    assert conn.execute("SELECT count(*) AS n FROM batch.dead_letter WHERE status = 'RESOLVED'"
                        ).fetchone()["n"] == len(fx_rows)
    listing = json.loads(monthend_cli(target, "dlq", "list", "--limit", "10000", "--json",
                                      check=True).stdout)
    listed = {(r["source_type"], r["source_id"]) for r in listing["rows"]}
    assert not listed & fx_rows
    assert "FX_RATE_MISSING" not in {r["reason_code"] for r in listing["by_reason"]}
    # Rows still bad were judged again by the second batch and stay open.
    assert len(listed) == open_before - len(fx_rows)
