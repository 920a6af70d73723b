"""Compliance reports (`monthend report`, sql/views/*_report.sql, trial_balance.sql):
each report's rows against independent SQL over the source, claim, dead-letter
and ledger tables; the exact threshold cases, before and after FX; the trial
balance balancing, and failing once a ledger line is tampered with; the
integrity report over several batches; JSON and CSV that parse; exit codes;
and every report readable by the auditor role.
"""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli, work_ranges
from monthend import db, report

PERIOD = "2025-01"
AUDITOR = "monthend_auditor"

# Crafted source rows: (source_type, id, txn_type, currency, amount, functional
# amount by the rounding rule at the generator's rates: EUR 1.0842, JPY
# 0.006712, GBP 1.2671). USD is the functional currency.
CRAFTED = [
    ("PREMIUM", 800001, "NEW_BUSINESS", "USD", "9999.99", "9999.99"),
    ("PREMIUM", 800002, "NEW_BUSINESS", "USD", "10000.00", "10000.00"),
    # 9223.38 * 1.0842 = 9999.988596 -> 9999.99; 9223.39 * 1.0842 = 9999.999438
    # -> 10000.00: below the threshold in EUR, on it once converted and rounded.
    ("PREMIUM", 800003, "RENEWAL", "EUR", "9223.38", "9999.99"),
    ("PREMIUM", 800004, "RENEWAL", "EUR", "9223.39", "10000.00"),
    # 1,489,868 JPY is far above 10,000 as a number, below it in USD.
    ("CLAIM", 800101, "LOSS_PAYMENT", "JPY", "1489868", "9999.99"),
    ("CLAIM", 800102, "LOSS_PAYMENT", "JPY", "1489869", "10000.00"),
    ("PREMIUM", 800005, "ENDORSEMENT", "USD", "49999.99", "49999.99"),
    ("PREMIUM", 800006, "ENDORSEMENT", "USD", "50000.00", "50000.00"),
    ("CLAIM", 800103, "EXPENSE_PAYMENT", "GBP", "39460.18", "49999.99"),
    ("CLAIM", 800104, "EXPENSE_PAYMENT", "GBP", "39460.19", "50000.01"),
    # Dead-lettered, yet large: negative (reported by absolute value), and a
    # transaction type without posting rules.
    ("PREMIUM", 800007, "NEW_BUSINESS", "USD", "-20000.00", "-20000.00"),
    ("PREMIUM", 800008, "BOGUS_TYPE", "USD", "12000.00", "12000.00"),
    # No rate can convert it: listed with the functional amount empty.
    ("PREMIUM", 800009, "NEW_BUSINESS", "XXX", "5.00", None),
]
LATE = ("PREMIUM", 800010, "RENEWAL", "USD", "15000.00", "15000.00")  # loaded after the run

LARGE_IDS = {800002, 800004, 800102, 800005, 800006, 800103, 800104, 800007, 800008, 800009}
HIGH_VALUE_IDS = {800006, 800104, 800009}
EXPECTED_STATUS = {800007: ("DEAD_LETTER", "AMOUNT_NEGATIVE"),
                   800008: ("DEAD_LETTER", "TXN_TYPE_UNKNOWN"),
                   800009: ("DEAD_LETTER", "CURRENCY_UNKNOWN")}

# Independent of the report: the source tables read separately, every lookup a
# correlated subquery on the base tables, the functional amount with USD's two
# decimals written out.
INDEPENDENT_LARGE_SQL = """
WITH src AS (
    SELECT 'PREMIUM'::text AS source_type, p.txn_id AS source_id, p.payment_date AS txn_date,
           p.amount, p.currency::text AS currency
    FROM subledger.premium_transaction AS p
    UNION ALL
    SELECT 'CLAIM', c.claim_id, c.claim_date, c.amount, c.currency::text
    FROM subledger.claims_transaction AS c
), converted AS (
    SELECT s.*, round(s.amount * (SELECT r.rate FROM gl.fx_rate AS r
                                  WHERE r.period = %(period)s AND r.currency = s.currency), 2)
                AS functional_amount
    FROM src AS s
    WHERE to_char(s.txn_date, 'YYYY-MM') = %(period)s AND s.amount <> 0
)
SELECT c.source_type, c.source_id, c.txn_date, c.amount, c.functional_amount,
       (SELECT min(h.je_number) FROM gl.journal_entry_header AS h
         WHERE h.source_type = c.source_type AND h.source_id = c.source_id) AS first_je_number,
       (SELECT max(h.je_number) FROM gl.journal_entry_header AS h
         WHERE h.source_type = c.source_type AND h.source_id = c.source_id) AS last_je_number,
       (SELECT count(*) FROM gl.journal_entry_header AS h
         WHERE h.source_type = c.source_type AND h.source_id = c.source_id) AS entries,
       (SELECT min(h.batch_id) FROM gl.journal_entry_header AS h
         WHERE h.source_type = c.source_type AND h.source_id = c.source_id) AS posted_batch,
       (SELECT r.batch_id FROM batch.source_claim AS sc JOIN batch.run AS r USING (batch_id)
         WHERE sc.source_type = c.source_type AND sc.source_id = c.source_id
           AND r.status <> 'COMMITTED') AS pending_batch,
       (SELECT d.reason_code FROM batch.dead_letter AS d
         WHERE d.source_type = c.source_type AND d.source_id = c.source_id
           AND d.status = 'OPEN' ORDER BY d.dead_letter_id DESC LIMIT 1) AS reason
FROM converted AS c
WHERE c.functional_amount IS NULL OR abs(c.functional_amount) >= %(threshold)s
"""


# --------------------------------------------------------------------------- helpers


class Terminal(io.StringIO):
    """An output that says it is a terminal, as a person's shell would."""

    def isatty(self) -> bool:
        return True


def insert_rows(conn: psycopg.Connection, rows: list[tuple], day: int = 15) -> None:
    for source_type, source_id, txn_type, currency, amount, _functional in rows:
        table, key, date_col = (("subledger.premium_transaction", "txn_id", "payment_date")
                                if source_type == "PREMIUM" else
                                ("subledger.claims_transaction", "claim_id", "claim_date"))
        if source_type == "PREMIUM":
            # Written on a policy in force.
            conn.execute("INSERT INTO subledger.policy VALUES (%s, 'COMMPROP', %s, %s) "
                         "ON CONFLICT DO NOTHING",
                         (700000 + source_id % 1000, f"{PERIOD}-01", f"{PERIOD[:4]}-12-31"))
        conn.execute(
            f"INSERT INTO {table} ({key}, policy_id, {date_col}, txn_type, line_of_business, "
            "amount, currency) VALUES (%s, %s, %s, %s, 'COMMPROP', %s, %s)",
            (source_id, 700000 + source_id % 1000, f"{PERIOD}-{day:02d}", txn_type,
             Decimal(amount), currency))


def run_period(target: db.Target, txns: int = 400, seed: int = 1) -> dict[str, Any]:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", str(txns), "--seed",
                 str(seed), "--bad-rows", "0.05", check=True)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        "150", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    return result


@pytest.fixture
def posted(target: db.Target, conn: psycopg.Connection) -> dict[str, Any]:
    """A period with generated and crafted rows, one committed batch, and a row
    loaded after it (unposted)."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "400", "--bad-rows", "0.05",
                 check=True)
    insert_rows(conn, CRAFTED)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        "150", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    insert_rows(conn, [LATE], day=20)
    return result


# The reports' numeric columns, printed as JSON strings of the exact decimal.
DECIMAL_KEYS = {"threshold", "amount", "fx_rate", "functional_amount", "debit", "credit",
                "balance"}


def _decimals(obj: dict[str, Any]) -> dict[str, Any]:
    for key in DECIMAL_KEYS & obj.keys():
        if obj[key] is not None:
            assert isinstance(obj[key], str), f"{key} is not a decimal string: {obj[key]!r}"
            obj[key] = Decimal(obj[key])
    return obj


def _no_float(text: str) -> Any:
    raise AssertionError(f"a JSON float in a report: {text}")


def report_json(target: db.Target, name: str, *extra: str, expect: int = 0) -> dict[str, Any]:
    """The report's JSON document, its decimal strings read back as Decimals."""
    proc = monthend_cli(target, "report", name, "--period", PERIOD, "--json", *extra)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout, object_hook=_decimals, parse_float=_no_float)


def report_csv(target: db.Target, name: str, *extra: str,
               expect: int = 0) -> list[dict[str, str]]:
    proc = monthend_cli(target, "report", name, "--period", PERIOD, "--csv", *extra)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout)))


def expected_transactions(conn: psycopg.Connection, threshold: Decimal) -> list[dict[str, Any]]:
    rows = conn.execute(INDEPENDENT_LARGE_SQL,
                        {"period": PERIOD, "threshold": threshold}).fetchall()
    expected = []
    for r in sorted(rows, key=lambda r: (r["txn_date"], r["source_type"], r["source_id"])):
        if r["entries"]:
            status, batch = "POSTED", r["posted_batch"]
        elif r["pending_batch"]:
            status, batch = "PENDING", r["pending_batch"]
        elif r["reason"]:
            status, batch = "DEAD_LETTER", None
        else:
            status, batch = "UNPOSTED", None
        expected.append({
            "source_type": r["source_type"], "source_id": r["source_id"],
            "amount": r["amount"], "functional_amount": r["functional_amount"],
            "status": status, "posted_batch": batch if status != "DEAD_LETTER" else None,
            "first_je_number": r["first_je_number"], "last_je_number": r["last_je_number"],
            "entries": r["entries"] or None,
            "dead_letter_reason": r["reason"] if status == "DEAD_LETTER" else None,
        })
    return expected


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows in the shape of expected_transactions."""
    return [{
        "source_type": r["source_type"], "source_id": r["source_id"],
        "amount": Decimal(str(r["amount"])),
        "functional_amount": (None if r["functional_amount"] is None
                              else Decimal(str(r["functional_amount"]))),
        "status": r["status"],
        "posted_batch": r["batch_id"] if r["status"] != "DEAD_LETTER" else None,
        "first_je_number": r["first_je_number"], "last_je_number": r["last_je_number"],
        "entries": r["entries"], "dead_letter_reason": r["dead_letter_reason"],
    } for r in rows]


def tamper_one_line(conn: psycopg.Connection, batch_id: int) -> None:
    """Raise one posted line's functional debit by a cent, past the ledger's guard
    (the test user is a superuser: what an attacker with that power could do)."""
    leaf = f"gl.journal_entry_line_{PERIOD.replace('-', '_')}_b{batch_id}"
    conn.execute(f"ALTER TABLE {leaf} DISABLE TRIGGER USER")
    conn.execute(f"UPDATE {leaf} SET functional_debit = functional_debit + 0.01 "
                 "WHERE ctid = (SELECT min(ctid) FROM " + leaf + " WHERE functional_debit > 0)")
    conn.execute(f"ALTER TABLE {leaf} ENABLE TRIGGER USER")


# --------------------------------------------------------------------------- large transactions


@pytest.mark.full
def test_large_transactions_match_independent_sql(target, conn, posted):
    assert conn.execute("SELECT functional_currency FROM gl.setting").fetchone()[
        "functional_currency"] == "USD"
    doc = report_json(target, "large-transactions")
    assert doc["report"] == "large-transactions" and doc["period"] == PERIOD
    assert doc["threshold"] == 10000 and doc["functional_currency"] == "USD"
    assert doc["ok"] is True
    expected = expected_transactions(conn, Decimal("10000"))
    assert comparable(doc["rows"]) == expected
    assert doc["summary"]["rows"] == len(expected)
    # The generated rows reach every status the report knows but PENDING.
    assert {r["status"] for r in doc["rows"]} == {"POSTED", "DEAD_LETTER", "UNPOSTED"}

    by_id = {r["source_id"]: r for r in doc["rows"] if r["source_id"] >= 800000}
    assert set(by_id) == LARGE_IDS | {LATE[1]}
    for source_type, source_id, _t, currency, amount, functional in [*CRAFTED, LATE]:
        if source_id not in by_id:
            continue
        row = by_id[source_id]
        assert (row["source_type"], row["currency"]) == (source_type, currency)
        assert Decimal(str(row["amount"])) == Decimal(amount)
        if functional is None:
            assert row["functional_amount"] is None and row["fx_rate"] is None
        else:
            assert Decimal(str(row["functional_amount"])) == Decimal(functional)
        status, reason = EXPECTED_STATUS.get(source_id, ("POSTED", None))
        if source_id == LATE[1]:
            status = "UNPOSTED"
        assert (row["status"], row["dead_letter_reason"]) == (status, reason), row
        if status == "POSTED":
            assert row["batch_id"] == posted["batch_id"] and row["entries"] == 3
            first = int(row["first_je_number"].rpartition("-")[2])
            assert row["last_je_number"] == f"{PERIOD}-{first + 2:010d}"


@pytest.mark.full
def test_threshold_is_a_parameter(target, conn, posted):
    lowered = report_csv(target, "large-transactions", "--threshold", "9999.99")
    ids = {int(r["source_id"]) for r in lowered if int(r["source_id"]) >= 800000}
    # At 9,999.99 the rows one cent below 10,000 in functional currency come in.
    assert ids == LARGE_IDS | {LATE[1], 800001, 800003, 800101}
    assert [r["source_id"] for r in lowered] == [
        str(r["source_id"]) for r in expected_transactions(conn, Decimal("9999.99"))]
    # psql callers get the same defaults as the CLI.
    defaults = conn.execute("""
        SELECT p.proname, pg_get_function_arguments(p.oid) AS args
        FROM pg_proc AS p WHERE p.oid IN ('gl.large_transaction_report'::regproc,
                                          'gl.high_value_transaction_report'::regproc)
    """).fetchall()
    found = {r["proname"]: Decimal(re.search(r"p_threshold numeric DEFAULT ([^,\s]+)",
                                             r["args"]).group(1).strip("'").split("::")[0])
             for r in defaults}
    assert found == {"large_transaction_report": report.DEFAULT_THRESHOLDS["large-transactions"],
                     "high_value_transaction_report": report.DEFAULT_THRESHOLDS["high-value"]}


@pytest.mark.full
def test_high_value_transactions(target, conn, posted):
    doc = report_json(target, "high-value")
    assert doc["threshold"] == 50000
    assert comparable(doc["rows"]) == expected_transactions(conn, Decimal("50000"))
    crafted = {r["source_id"] for r in doc["rows"] if r["source_id"] >= 800000}
    assert crafted == HIGH_VALUE_IDS
    rows = report_csv(target, "high-value")
    assert [r["source_id"] for r in rows] == [str(r["source_id"]) for r in doc["rows"]]
    gbp = next(r for r in rows if r["source_id"] == "800104")
    assert (gbp["currency"], gbp["fx_rate"], gbp["functional_amount"]) == (
        "GBP", "1.2671", "50000.01")
    assert gbp["status"] == "POSTED" and gbp["entries"] == "3"
    # Plain table (stdout is not a terminal): a header line and one line a row.
    proc = monthend_cli(target, "report", "high-value", "--period", PERIOD, check=True)
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:3] == ["date", "source", "id"]
    assert sum(1 for line in lines if " 800104 " in line) == 1
    assert f"{len(rows)} transactions" in proc.stdout


@pytest.mark.full
def test_pending_rows_of_an_unfinished_batch(target, conn, posted):
    insert_rows(conn, [("CLAIM", 800201, "RECOVERY", "USD", "75000.00", "75000.00")], day=3)
    batch_id = conn.execute("CALL batch.start_run(%s, 1, 100, 3, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    conn.execute("CALL batch.preflight(%s)", (batch_id,))
    work_ranges(conn, batch_id)
    doc = report_json(target, "high-value")
    row = next(r for r in doc["rows"] if r["source_id"] == 800201)
    assert (row["status"], row["batch_id"], row["first_je_number"]) == ("PENDING", batch_id, None)
    assert comparable(doc["rows"]) == expected_transactions(conn, Decimal("50000"))
    # An unfinished batch is no integrity problem: it has not touched the ledger.
    integrity = report_json(target, "integrity")
    assert integrity["ok"] is True
    unfinished = next(r for r in integrity["rows"] if r["batch_id"] == batch_id)
    assert unfinished["status"] == "PREFLIGHTING" and unfinished["ok"] is None
    assert unfinished["problems"] is None and unfinished["seal_seq"] is None


# --------------------------------------------------------------------------- trial balance


@pytest.mark.full
def test_trial_balance_balances_and_matches_the_ledger(target, conn, posted):
    doc = report_json(target, "trial-balance")
    assert doc["ok"] is True
    rows = doc["rows"]
    accounts = {r["account_code"]: r for r in rows if r["row_kind"] == "ACCOUNT"}
    # Every account of the chart, each from the ledger lines joined to their headers.
    ledger = {r["account_code"]: r for r in conn.execute("""
        SELECT l.account_code, count(*) AS lines, sum(l.functional_debit) AS debit,
               sum(l.functional_credit) AS credit
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE h.period = %s GROUP BY l.account_code""", (PERIOD,)).fetchall()}
    chart = {r["account_code"]: r for r in conn.execute(
        "SELECT account_code, name, account_type FROM gl.account").fetchall()}
    assert set(accounts) == set(chart)
    for code, row in accounts.items():
        mine = ledger.get(code, {"lines": 0, "debit": Decimal(0), "credit": Decimal(0)})
        assert (row["account_name"], row["account_type"]) == (chart[code]["name"],
                                                              chart[code]["account_type"])
        assert (row["lines"], row["debit"], row["credit"]) == (
            mine["lines"], mine["debit"], mine["credit"]), code
        assert row["balance"] == mine["debit"] - mine["credit"]
        assert row["balanced"] is None

    total = next(r for r in rows if r["row_kind"] == "TOTAL")
    assert total["debit"] == total["credit"] == sum(r["debit"] for r in ledger.values())
    assert total["lines"] == posted["journal_lines"] and total["balanced"] is True
    assert doc["summary"]["debit"] == total["debit"]

    batches = [r for r in rows if r["row_kind"] == "BATCH"]
    assert [(r["batch_id"], r["balanced"]) for r in batches] == [(posted["batch_id"], True)]
    # Per transaction currency, against the ledger lines under each header's currency.
    by_currency = {r["currency"]: (r["debit"], r["credit"]) for r in conn.execute("""
        SELECT h.currency, sum(l.debit) AS debit, sum(l.credit) AS credit
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE h.period = %s GROUP BY h.currency""", (PERIOD,)).fetchall()}
    currencies = {r["currency"]: (r["debit"], r["credit"])
                  for r in rows if r["row_kind"] == "CURRENCY"}
    assert currencies == by_currency
    assert all(r["balanced"] for r in rows if r["row_kind"] == "CURRENCY")
    assert {"JPY", "EUR", "GBP", "USD"} <= set(currencies)

    table = monthend_cli(target, "report", "trial-balance", "--period", PERIOD, check=True)
    assert "BALANCED: debits" in table.stdout and "NOT BALANCED" not in table.stdout
    # On a terminal the same report is a rich table.
    terminal = Terminal()
    assert report.run(target, "trial-balance", PERIOD, "table", out=terminal) is True
    shown = terminal.getvalue()
    assert "┏━" in shown and "│ 1200 " in shown and "BALANCED: debits" in shown
    csv_rows = report_csv(target, "trial-balance")
    assert [(r["row_kind"], r["account_code"], r["debit"]) for r in csv_rows] == [
        (r["row_kind"], r["account_code"] or "", str(r["debit"])) for r in rows]


@pytest.mark.full
def test_tampered_ledger_fails_trial_balance_and_integrity(target, conn, posted):
    tamper_one_line(conn, posted["batch_id"])

    doc = report_json(target, "trial-balance", expect=1)
    assert doc["ok"] is False
    total = next(r for r in doc["rows"] if r["row_kind"] == "TOTAL")
    assert total["balanced"] is False and total["balance"] == Decimal("0.01")
    batch = next(r for r in doc["rows"] if r["row_kind"] == "BATCH")
    assert batch["balanced"] is False
    assert any("does not balance" in p for p in doc["summary"]["problems"])
    table = monthend_cli(target, "report", "trial-balance", "--period", PERIOD)
    assert table.returncode == 1 and "NOT BALANCED" in table.stdout

    integrity = report_json(target, "integrity", expect=1)
    row = integrity["rows"][0]
    assert row["ok"] is False and row["problems"] >= 1
    assert "RANGE_DIGEST_MISMATCH" in row["problem_codes"]
    # The seal itself is intact: the ledger rows are what changed.
    assert row["seal_digest_ok"] is True and row["chain_ok"] is True


# --------------------------------------------------------------------------- integrity


@pytest.mark.full
def test_integrity_report_over_several_batches(target, conn):
    first = run_period(target, 300, seed=1)
    # A cancelled batch between two committed ones takes no numbers.
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "200", "--seed", "2",
                 check=True)
    cancelled = conn.execute("CALL batch.start_run(%s, 1, 100, 3, NULL)",
                             (PERIOD,)).fetchone()["p_batch_id"]
    conn.execute("CALL batch.cancel_batch(%s)", (cancelled,))
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        "150", "--json", check=True)
    second = json.loads(proc.stdout)

    doc = report_json(target, "integrity")
    assert doc["ok"] is True
    rows = {r["batch_id"]: r for r in doc["rows"]}
    assert list(rows) == [first["batch_id"], cancelled, second["batch_id"]]
    assert rows[cancelled]["status"] == "CANCELLED" and rows[cancelled]["ok"] is None

    seals = {r["batch_id"]: r for r in conn.execute("""
        SELECT batch_id, seq, encode(hash, 'hex') AS hash, payload ->> 'digest' AS digest
        FROM audit.log WHERE event = 'BATCH_COMMITTED'""").fetchall()}
    runs = {r["batch_id"]: r for r in conn.execute(
        "SELECT batch_id, je_count, line_count, claimed_rows, encode(digest, 'hex') AS digest "
        "FROM batch.run WHERE period = %s", (PERIOD,)).fetchall()}
    numbers = 0
    for result in (first, second):
        b = result["batch_id"]
        row = rows[b]
        assert row["status"] == "COMMITTED" and row["ok"] is True
        assert (row["seal_seq"], row["seal_hash"]) == (seals[b]["seq"], seals[b]["hash"])
        assert row["digest"] == runs[b]["digest"] == seals[b]["digest"] == result["digest"]
        assert (row["entries"], row["lines"], row["posted_rows"]) == (
            runs[b]["je_count"], runs[b]["line_count"], runs[b]["claimed_rows"])
        assert row["first_je_number"] == f"{PERIOD}-{numbers + 1:010d}"
        numbers += row["entries"]
        assert row["last_je_number"] == f"{PERIOD}-{numbers:010d}"
        assert (row["problems"], row["problem_codes"]) == (0, [])
        assert conn.execute("SELECT count(*) AS n FROM audit.verify_batch(%s)",
                            (b,)).fetchone()["n"] == 0
        assert row["chain_ok"] and row["numbering_ok"] and row["seal_digest_ok"]
    assert doc["summary"]["committed"] == 2 and doc["summary"]["problems"] == []

    table = monthend_cli(target, "report", "integrity", "--period", PERIOD, check=True)
    assert table.stdout.rstrip().endswith("0 verify_batch problem(s)")
    assert "OK: 2 committed batch(es) of 3 verified" in table.stdout
    csv_rows = report_csv(target, "integrity")
    assert [(r["batch_id"], r["status"], r["ok"], r["problem_codes"]) for r in csv_rows] == [
        (str(first["batch_id"]), "COMMITTED", "true", ""), (str(cancelled), "CANCELLED", "", ""),
        (str(second["batch_id"]), "COMMITTED", "true", "")]


def test_empty_period(target, conn):
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date) "
                 "VALUES (%s, '2025-01-01', '2025-01-31')", (PERIOD,))
    large = report_json(target, "large-transactions")
    assert large["rows"] == [] and large["ok"] is True
    tb = report_json(target, "trial-balance")
    total = next(r for r in tb["rows"] if r["row_kind"] == "TOTAL")
    assert tb["ok"] is True and total["debit"] == total["credit"] == 0
    integrity = report_json(target, "integrity")
    assert integrity["rows"] == [] and integrity["ok"] is True
    header_only = report_csv(target, "large-transactions")
    assert header_only == []


# --------------------------------------------------------------------------- roles and usage


@pytest.mark.full
def test_auditor_reads_every_report(target, conn, posted):
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as auditor:
        auditor.execute(f"SET ROLE {AUDITOR}")
        for sql in ("SELECT count(*) AS n FROM gl.large_transaction_report(%(p)s)",
                    "SELECT count(*) AS n FROM gl.high_value_transaction_report(%(p)s)",
                    "SELECT count(*) AS n FROM gl.trial_balance(%(p)s)",
                    "SELECT count(*) AS n FROM audit.integrity_report(%(p)s)"):
            assert auditor.execute(sql, {"p": PERIOD}).fetchone()["n"] > 0, sql
    # The CLI as the auditor, every session taking the role from the start.
    as_auditor = db.Target(f"{target.conninfo} options='-c role={AUDITOR}'", "--dsn")
    # The period-end reports need a period-end: tests/test_period_end_reports.py.
    for name in (n for n in report.NAMES if report.REPORTS[n].kind not in report.PERIOD_END_KINDS):
        proc = monthend_cli(as_auditor, "report", name, "--period", PERIOD, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["ok"] is True


@pytest.mark.full
def test_usage_errors_exit_2(target, conn, posted):
    cases = [
        ("report", "trial-balance", "--period", "2031-05"),  # no such period
        ("report", "trial-balance", "--period", PERIOD, "--threshold", "10"),
        ("report", "large-transactions", "--period", PERIOD, "--threshold", "-5"),
        ("report", "large-transactions", "--period", PERIOD, "--threshold", "lots"),
        ("report", "high-value", "--period", PERIOD, "--threshold", "NaN"),
        ("report", "large-transactions", "--period", PERIOD, "--json", "--csv"),
        ("report", "balance-sheet", "--period", PERIOD),
        ("report", "integrity", "--period", "2025-13"),
    ]
    for args in cases:
        proc = monthend_cli(target, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.strip(), args
    unknown = monthend_cli(target, "report", "integrity", "--period", "2031-05", "--json")
    assert json.loads(unknown.stdout)["status"] == "ERROR"
    assert "not in gl.accounting_period" in unknown.stderr
