"""Money is exact in every JSON document the CLI prints: a Decimal is a JSON
string of its exact digits in plain notation, an integer a JSON number."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from conftest import monthend_cli
from monthend import cli, jsonout

PERIOD = "2025-01"
# 15 and 17 significant digits: as floats, the second is 1234567890123.4502.
AMOUNTS = {910001: "1234567890123.45", 910002: "1234567890123.4501", 910003: "0.10"}


@pytest.mark.parametrize(("value", "text"), [
    ("1234567890123.45", "1234567890123.45"),
    ("1234567890123.4501", "1234567890123.4501"),
    ("1E+2", "100"),
    ("0.10", "0.10"),
    ("1E-7", "0.0000001"),
    ("-0.00", "-0.00"),
    ("-42.5", "-42.5"),
    ("0E-10", "0.0000000000"),
])
def test_a_decimal_is_its_exact_digits_without_exponent(value: str, text: str) -> None:
    assert jsonout.decimal_text(Decimal(value)) == text
    assert json.loads(jsonout.dumps({"amount": Decimal(value)})) == {"amount": text}
    assert jsonout.value_text(Decimal(value)) == f'"{text}"'


def test_one_policy_for_whole_documents_and_streamed_values() -> None:
    row = {"amount": Decimal("1234567890123.4501"), "rows": 3, "big": 2**70,
           "ok": True, "none": None, "seconds": 0.25, "name": "caf\u00e9",
           "day": date(2025, 1, 31),
           "at": datetime(2025, 1, 31, 23, 59, 58, tzinfo=UTC),
           "list": [Decimal("1E+2"), 7, "x"], "nested": {"total": Decimal("0.10")}}
    expected = {"amount": "1234567890123.4501", "rows": 3, "big": 2**70, "ok": True,
                "none": None, "seconds": 0.25, "name": "caf\u00e9", "day": "2025-01-31",
                "at": "2025-01-31T23:59:58+00:00", "list": ["100", 7, "x"],
                "nested": {"total": "0.10"}}
    document = json.loads(jsonout.dumps(row))
    assert document == expected
    # Integers stay JSON numbers (Python int), never strings or floats.
    assert type(document["rows"]) is int and type(document["big"]) is int
    # report streams rows through value_text: the same text as the whole-document encoder.
    assert jsonout.value_text(row) == jsonout.dumps(row, indent=None)
    assert json.loads(jsonout.value_text(row)) == expected


def test_the_cli_prints_decimals_through_the_policy(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "_json_emitted", False)
    cli.emit_json({"amount": Decimal("1234567890123.4501"), "count": 2})
    assert json.loads(capsys.readouterr().out) == {"amount": "1234567890123.4501", "count": 2}


def test_dlq_list_prints_amounts_exactly(target, conn) -> None:
    """Dead letters carry the source amount; the CLI prints it digit for digit."""
    conn.execute("INSERT INTO gl.accounting_period (period, start_date, end_date, status) "
                 "VALUES (%s, '2025-01-01', '2025-01-31', 'OPEN') ON CONFLICT DO NOTHING",
                 (PERIOD,))
    for source_id, amount in AMOUNTS.items():
        # No policy: dead-lettered as POLICY_MISSING, amount as loaded.
        conn.execute("INSERT INTO subledger.premium_transaction (txn_id, policy_id, "
                     "payment_date, txn_type, line_of_business, amount, currency) "
                     "VALUES (%s, NULL, '2025-01-15', 'NEW_BUSINESS', 'HOME', %s, 'USD')",
                     (source_id, Decimal(amount)))
    run = monthend_cli(target, "run", "--period", PERIOD, "--json", check=True)
    assert json.loads(run.stdout)["dead_letter_rows"] == 3

    proc = monthend_cli(target, "dlq", "list", "--json", check=True)
    listing = json.loads(proc.stdout)
    assert {r["source_id"]: r["amount"] for r in listing["rows"]} == AMOUNTS
    assert [(r["reason_code"], r["rows"], r["amount"]) for r in listing["by_reason"]] == [
        # 1234567890123.45 + 1234567890123.4501 + 0.10; a float prints 2469135780247.0.
        ("POLICY_MISSING", 3, "2469135780247.0001")]
    # The text itself, not only what a parser makes of it.
    assert '"amount": "1234567890123.4501"' in proc.stdout
    assert '"rows": 3' in proc.stdout
