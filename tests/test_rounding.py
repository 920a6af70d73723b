"""The normative amounts-and-rounding rule, checked against amounts computed by
hand: transaction currencies with 0, 2 and 3 minor units, ratios of 1/3 whose
remainder the balancing line absorbs (on either side), and half away from zero
at exactly .5 in both transaction and functional currency."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from conftest import monthend_cli

PERIOD = "2025-03"
ONE_THIRD = "1::numeric / 3"

# Transaction-currency rates to USD, the functional currency (2 minor units).
RATES = {"USD": "1", "EUR": "1.1", "JPY": "0.0067", "BHD": "2.6525"}

# (source_type, txn_type, je_seq, description, [(line_no, account, side, ratio SQL)]).
# RT_THIRDS entry 2 has its balancing line on the debit side.
TEMPLATES = [
    (source_type, txn_type, je_seq, desc, lines)
    for source_type in ("PREMIUM", "CLAIM")
    for txn_type, je_seq, desc, lines in [
        ("RT_HALF", 1, "half and the rest",
         [(1, "1200", "D", "1.0"), (2, "2300", "C", "0.5"), (3, "2100", "C", None)]),
        ("RT_THIRDS", 1, "thirds, credit balancing",
         [(1, "1200", "D", "1.0"), (2, "2300", "C", ONE_THIRD), (3, "2400", "C", ONE_THIRD),
          (4, "2100", "C", None)]),
        ("RT_THIRDS", 2, "thirds, debit balancing",
         [(1, "5200", "D", ONE_THIRD), (2, "1400", "D", None), (3, "2400", "C", "1.0")]),
    ]
]

# Source rows and every line they must post, by hand:
# (source_type, id, txn_type, currency, amount,
#  {je_seq: [(line_no, account, side, amount, functional amount)]})
CASES = [
    # A_f = round(1000 * 0.0067, 2) = 6.70; 1000/3 = 333.33.. -> 333 twice, balancing 334;
    # 6.70/3 = 2.233.. -> 2.23 twice, balancing 2.24.
    ("PREMIUM", 1, "RT_THIRDS", "JPY", "1000", {
        1: [(1, "1200", "D", "1000", "6.70"), (2, "2300", "C", "333", "2.23"),
            (3, "2400", "C", "333", "2.23"), (4, "2100", "C", "334", "2.24")],
        2: [(1, "5200", "D", "333", "2.23"), (2, "1400", "D", "667", "4.47"),
            (3, "2400", "C", "1000", "6.70")],
    }),
    # 1001 * 0.5 = 500.5 -> 501 (half away from zero; half-even would give 500).
    # A_f = round(6.7067, 2) = 6.71; 6.71 * 0.5 = 3.355 -> 3.36.
    ("PREMIUM", 2, "RT_HALF", "JPY", "1001", {
        1: [(1, "1200", "D", "1001", "6.71"), (2, "2300", "C", "501", "3.36"),
            (3, "2100", "C", "500", "3.35")],
    }),
    # A_f = round(10 * 2.6525, 2) = round(26.525, 2) = 26.53 (half-even: 26.52).
    # 10/3 -> 3.333 twice, balancing 3.334; 26.53/3 = 8.843.. -> 8.84, balancing 8.85.
    ("PREMIUM", 3, "RT_THIRDS", "BHD", "10.000", {
        1: [(1, "1200", "D", "10.000", "26.53"), (2, "2300", "C", "3.333", "8.84"),
            (3, "2400", "C", "3.333", "8.84"), (4, "2100", "C", "3.334", "8.85")],
        2: [(1, "5200", "D", "3.333", "8.84"), (2, "1400", "D", "6.667", "17.69"),
            (3, "2400", "C", "10.000", "26.53")],
    }),
    # 1.001 * 0.5 = 0.5005 -> 0.501 (half-even: 0.500). A_f = round(2.6551525, 2) = 2.66.
    ("PREMIUM", 4, "RT_HALF", "BHD", "1.001", {
        1: [(1, "1200", "D", "1.001", "2.66"), (2, "2300", "C", "0.501", "1.33"),
            (3, "2100", "C", "0.500", "1.33")],
    }),
    # The shipped NEW_BUSINESS rules (written premium) in USD: the receivable takes
    # the premium and the 3% tax charged (balancing, on the debit side).
    ("PREMIUM", 5, "NEW_BUSINESS", "USD", "1000.00", {
        1: [(1, "1200", "D", "1030.00", "1030.00"), (2, "4050", "C", "1000.00", "1000.00"),
            (3, "2300", "C", "30.00", "30.00")],
        2: [(1, "5200", "D", "150.00", "150.00"), (2, "1400", "D", "20.00", "20.00"),
            (3, "2400", "C", "170.00", "170.00")],
        3: [(1, "4100", "D", "100.00", "100.00"), (2, "4200", "C", "25.00", "25.00"),
            (3, "2500", "C", "75.00", "75.00")],
    }),
    # The shipped rules in JPY: A_f = round(12345 * 0.0067 = 82.7115, 2) = 82.71;
    # 12345 * 0.10 = 1234.5 -> 1235 (half away from zero), 82.71 * 0.10 = 8.271 -> 8.27;
    # 12345 * 0.025 = 308.625 -> 309, 82.71 * 0.025 = 2.06775 -> 2.07.
    ("PREMIUM", 6, "NEW_BUSINESS", "JPY", "12345", {
        1: [(1, "1200", "D", "12715", "85.19"), (2, "4050", "C", "12345", "82.71"),
            (3, "2300", "C", "370", "2.48")],
        2: [(1, "5200", "D", "1852", "12.41"), (2, "1400", "D", "247", "1.65"),
            (3, "2400", "C", "2099", "14.06")],
        3: [(1, "4100", "D", "1235", "8.27"), (2, "4200", "C", "309", "2.07"),
            (3, "2500", "C", "926", "6.20")],
    }),
    # 100.25 * 0.5 = 50.125 -> 50.13 (half-even: 50.12); the balancing line takes 50.12.
    ("CLAIM", 1, "RT_HALF", "USD", "100.25", {
        1: [(1, "1200", "D", "100.25", "100.25"), (2, "2300", "C", "50.13", "50.13"),
            (3, "2100", "C", "50.12", "50.12")],
    }),
    # EUR at 1.1: A_f = 220.00. 200/3 -> 66.67 twice, so the balancing line takes the
    # smaller 66.66; 220/3 -> 73.33 twice, balancing 73.34.
    ("CLAIM", 2, "RT_THIRDS", "EUR", "200.00", {
        1: [(1, "1200", "D", "200.00", "220.00"), (2, "2300", "C", "66.67", "73.33"),
            (3, "2400", "C", "66.67", "73.33"), (4, "2100", "C", "66.66", "73.34")],
        2: [(1, "5200", "D", "66.67", "73.33"), (2, "1400", "D", "133.33", "146.67"),
            (3, "2400", "C", "200.00", "220.00")],
    }),
    # The smallest unit: 0.01 * 0.5 = 0.005 -> 0.01, leaving a zero balancing line.
    ("CLAIM", 3, "RT_HALF", "USD", "0.01", {
        1: [(1, "1200", "D", "0.01", "0.01"), (2, "2300", "C", "0.01", "0.01"),
            (3, "2100", "C", "0.00", "0.00")],
    }),
]

TEMPLATE_DESCRIPTIONS = {(t[0], t[1], t[2]): t[3] for t in TEMPLATES} | {
    ("PREMIUM", "NEW_BUSINESS", 1): "Premium written",
    ("PREMIUM", "NEW_BUSINESS", 2): "Commission on written premium",
    ("PREMIUM", "NEW_BUSINESS", 3): "Premium ceded to the reinsurer",
}


def open_period(conn, period: str, rates: dict[str, str]) -> None:
    conn.execute("CALL gl.open_period(%s)", (period,))
    for currency, rate in rates.items():
        conn.execute("INSERT INTO gl.fx_rate (period, currency, rate) VALUES (%s, %s, %s)",
                     (period, currency, Decimal(rate)))


def add_templates(conn, templates) -> None:
    # One transaction: the template check is deferred to commit.
    with conn.transaction():
        for source_type, txn_type, je_seq, description, lines in templates:
            conn.execute("INSERT INTO gl.journal_template (source_type, txn_type, je_seq, "
                         "description) VALUES (%s, %s, %s, %s)",
                         (source_type, txn_type, je_seq, description))
            for line_no, account, side, ratio in lines:
                conn.execute(
                    "INSERT INTO gl.posting_rule (source_type, txn_type, je_seq, line_no, "
                    "account_code, side, ratio) VALUES (%s, %s, %s, %s, %s, %s, "
                    f"{ratio if ratio is not None else 'NULL'})",
                    (source_type, txn_type, je_seq, line_no, account, side))


def insert_source(conn, source_type: str, source_id: int, txn_type: str, currency: str,
                  amount: str, txn_date: str) -> None:
    table, id_col, date_col = (("subledger.premium_transaction", "txn_id", "payment_date")
                               if source_type == "PREMIUM" else
                               ("subledger.claims_transaction", "claim_id", "claim_date"))
    if source_type == "PREMIUM":
        # Premium is written on a policy, inside its term.
        conn.execute("INSERT INTO subledger.policy VALUES (1, 'AUTO', '2025-01-01', "
                     "'2026-01-01') ON CONFLICT DO NOTHING")
    conn.execute(f"INSERT INTO {table} ({id_col}, policy_id, {date_col}, txn_type, "
                 "line_of_business, amount, currency) VALUES (%s, 1, %s, %s, 'AUTO', %s, %s)",
                 (source_id, txn_date, txn_type, Decimal(amount), currency))


def test_ratio_is_exact_numeric(conn):
    """A ratio is numeric: 1/3 keeps numeric division's digits, so a third of a
    currency amount rounds as the rule says rather than as a float would."""
    add_templates(conn, TEMPLATES)
    row = conn.execute("SELECT pg_typeof(ratio)::text AS type, ratio = 1::numeric / 3 AS exact "
                       "FROM gl.posting_rule WHERE source_type = 'PREMIUM' "
                       "AND txn_type = 'RT_THIRDS' AND je_seq = 1 AND line_no = 2").fetchone()
    assert row == {"type": "numeric", "exact": True}


def test_hand_computed_lines(target, conn):
    open_period(conn, PERIOD, RATES)
    add_templates(conn, TEMPLATES)
    for i, (source_type, source_id, txn_type, currency, amount, _) in enumerate(CASES):
        insert_source(conn, source_type, source_id, txn_type, currency, amount,
                      f"{PERIOD}-{i + 1:02d}")

    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2",
                        "--range-size", "2", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    assert result["posted_rows"] == len(CASES)
    assert result["dead_letter_rows"] == 0

    lines = conn.execute("""
        SELECT h.source_type, h.source_id, h.je_seq, l.line_no, l.account_code,
               l.debit, l.credit, l.functional_debit, l.functional_credit
        FROM gl.journal_entry_header AS h
        JOIN gl.journal_entry_line AS l
          ON l.je_id = h.je_id AND l.je_date = h.je_date AND l.batch_id = h.batch_id
        WHERE h.period = %s
    """, (PERIOD,)).fetchall()
    actual = {(r["source_type"], r["source_id"], r["je_seq"], r["line_no"]):
              (r["account_code"], r["debit"], r["credit"], r["functional_debit"],
               r["functional_credit"]) for r in lines}
    assert len(actual) == len(lines), "a line is posted twice"

    expected = {}
    for source_type, source_id, _, _, _, entries in CASES:
        for je_seq, je_lines in entries.items():
            for line_no, account, side, amount, amount_f in je_lines:
                a, f, zero = Decimal(amount), Decimal(amount_f), Decimal(0)
                expected[(source_type, source_id, je_seq, line_no)] = (
                    account, a if side == "D" else zero, a if side == "C" else zero,
                    f if side == "D" else zero, f if side == "C" else zero)

    assert actual.keys() == expected.keys()
    wrong = {k: (actual[k], v) for k, v in expected.items() if actual[k] != v}
    assert not wrong, f"lines differ from the hand-computed amounts: {wrong}"


def test_headers_carry_source_and_rate(target, conn):
    open_period(conn, PERIOD, RATES)
    add_templates(conn, TEMPLATES)
    for i, (source_type, source_id, txn_type, currency, amount, _) in enumerate(CASES):
        insert_source(conn, source_type, source_id, txn_type, currency, amount,
                      f"{PERIOD}-{i + 1:02d}")
    monthend_cli(target, "run", "--period", PERIOD, "--range-size", "4", check=True)

    headers = conn.execute(
        "SELECT source_type, source_id, je_seq, je_date::text AS je_date, currency, fx_rate, "
        "description, source_amount, period FROM gl.journal_entry_header").fetchall()
    by_key = {(h["source_type"], h["source_id"], h["je_seq"]): h for h in headers}
    assert len(by_key) == len(headers)
    expected_keys = set()
    for i, (source_type, source_id, txn_type, currency, amount, entries) in enumerate(CASES):
        for je_seq in entries:
            expected_keys.add((source_type, source_id, je_seq))
            h = by_key[(source_type, source_id, je_seq)]
            assert h["je_date"] == f"{PERIOD}-{i + 1:02d}"
            assert h["period"] == PERIOD
            assert h["currency"] == currency
            assert h["fx_rate"] == Decimal(RATES[currency])
            assert h["source_amount"] == Decimal(amount)
            assert h["description"] == TEMPLATE_DESCRIPTIONS[(source_type, txn_type, je_seq)]
    assert set(by_key) == expected_keys


@pytest.mark.full
def test_generated_period_follows_the_rule(target, conn):
    """Every line of a generated period, recomputed independently of the product's
    view: ratio lines from the rule, the balancing line as the difference of the
    others, in transaction and functional currency."""
    monthend_cli(target, "generate", "--period", "2025-01", "--txns", "3000", "--seed", "7",
                 check=True)
    monthend_cli(target, "run", "--period", "2025-01", "--workers", "3", "--range-size", "400",
                 check=True)

    mismatches = conn.execute("""
        WITH src AS (
            SELECT 'PREMIUM' AS source_type, txn_id AS source_id, txn_type, amount, currency
            FROM subledger.premium_transaction
            UNION ALL
            SELECT 'CLAIM', claim_id, txn_type, amount, currency
            FROM subledger.claims_transaction
        ), fmu AS (
            SELECT c.minor_units AS mu
            FROM gl.setting AS s JOIN gl.currency AS c ON c.code = s.functional_currency
        ), entry AS (
            SELECT h.je_id, h.je_date, h.batch_id, h.source_type, h.je_seq, s.txn_type,
                   s.amount, c.minor_units AS mu,
                   round(s.amount * fx.rate, (SELECT mu FROM fmu)) AS amount_f
            FROM gl.journal_entry_header AS h
            JOIN src AS s ON s.source_type = h.source_type AND s.source_id = h.source_id
            JOIN gl.currency AS c ON c.code = s.currency
            JOIN gl.fx_rate AS fx ON fx.period = h.period AND fx.currency = s.currency
        ), ratio_line AS (
            SELECT e.je_id, e.je_date, e.batch_id, r.line_no, r.account_code, r.side,
                   r.ratio IS NULL AS balancing,
                   round(e.amount * r.ratio, e.mu) AS amount,
                   round(e.amount_f * r.ratio, (SELECT mu FROM fmu)) AS amount_f
            FROM entry AS e
            JOIN gl.posting_rule AS r
              ON r.source_type = e.source_type AND r.txn_type = e.txn_type
             AND r.je_seq = e.je_seq
        ), expected AS (
            SELECT x.je_id, x.je_date, x.batch_id, x.line_no, x.account_code, x.side,
                   CASE WHEN x.balancing THEN
                       sum(CASE WHEN x.side = 'D' THEN -x.amount ELSE x.amount END)
                           FILTER (WHERE NOT x.balancing) OVER w
                       * CASE x.side WHEN 'D' THEN 1 ELSE -1 END
                   ELSE x.amount END AS amount,
                   CASE WHEN x.balancing THEN
                       sum(CASE WHEN x.side = 'D' THEN -x.amount_f ELSE x.amount_f END)
                           FILTER (WHERE NOT x.balancing) OVER w
                       * CASE x.side WHEN 'D' THEN 1 ELSE -1 END
                   ELSE x.amount_f END AS amount_f
            FROM ratio_line AS x
            WINDOW w AS (PARTITION BY x.je_id)
        ), expected_line AS (
            SELECT e.je_id, e.je_date, e.batch_id, e.line_no, e.account_code,
                   CASE e.side WHEN 'D' THEN e.amount ELSE 0 END AS debit,
                   CASE e.side WHEN 'C' THEN e.amount ELSE 0 END AS credit,
                   CASE e.side WHEN 'D' THEN e.amount_f ELSE 0 END AS functional_debit,
                   CASE e.side WHEN 'C' THEN e.amount_f ELSE 0 END AS functional_credit
            FROM expected AS e
        )
        SELECT coalesce(x.je_id, l.je_id) AS je_id, coalesce(x.line_no, l.line_no) AS line_no,
               x.debit AS exp_debit, l.debit, x.credit AS exp_credit, l.credit,
               x.functional_debit AS exp_fd, l.functional_debit,
               x.functional_credit AS exp_fc, l.functional_credit
        FROM expected_line AS x
        FULL JOIN gl.journal_entry_line AS l
          ON l.je_id = x.je_id AND l.je_date = x.je_date AND l.batch_id = x.batch_id
         AND l.line_no = x.line_no
        WHERE x.je_id IS NULL OR l.je_id IS NULL
           OR x.account_code <> l.account_code
           OR x.debit <> l.debit OR x.credit <> l.credit
           OR x.functional_debit <> l.functional_debit
           OR x.functional_credit <> l.functional_credit
        LIMIT 20
    """).fetchall()
    assert mismatches == []
    assert conn.execute("SELECT count(*) AS n FROM gl.journal_entry_line").fetchone()["n"] > 0


def assert_every_entry_balances(conn) -> None:
    unbalanced = conn.execute("""
        SELECT h.je_id, sum(l.debit) AS debit, sum(l.credit) AS credit,
               sum(l.functional_debit) AS fd, sum(l.functional_credit) AS fc
        FROM gl.journal_entry_header AS h
        JOIN gl.journal_entry_line AS l
          ON l.je_id = h.je_id AND l.je_date = h.je_date AND l.batch_id = h.batch_id
        GROUP BY h.je_id
        HAVING sum(l.debit) <> sum(l.credit)
            OR sum(l.functional_debit) <> sum(l.functional_credit)
    """).fetchall()
    assert unbalanced == []
    one_sided = conn.execute("""
        SELECT count(*) AS n FROM gl.journal_entry_line
        WHERE debit < 0 OR credit < 0 OR functional_debit < 0 OR functional_credit < 0
           OR (debit <> 0 AND credit <> 0)
           OR (functional_debit <> 0 AND functional_credit <> 0)
    """).fetchone()["n"]
    assert one_sided == 0


@pytest.mark.full
def test_every_entry_balances_in_both_currencies(target, conn):
    open_period(conn, PERIOD, RATES)
    add_templates(conn, TEMPLATES)
    for i, (source_type, source_id, txn_type, currency, amount, _) in enumerate(CASES):
        insert_source(conn, source_type, source_id, txn_type, currency, amount,
                      f"{PERIOD}-{i + 1:02d}")
    monthend_cli(target, "run", "--period", PERIOD, check=True)
    monthend_cli(target, "generate", "--period", "2025-01", "--txns", "2000", check=True)
    monthend_cli(target, "run", "--period", "2025-01", "--range-size", "500", check=True)
    assert conn.execute("SELECT count(DISTINCT period) AS n "
                        "FROM gl.journal_entry_header").fetchone()["n"] == 2
    assert_every_entry_balances(conn)
