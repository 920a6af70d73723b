"""The period-end reports (`monthend report upr`, `monthend report fx-revaluation`;
sql/functions/upr_report.sql, fx_revaluation_report.sql) on the hand-built period
of test_period_end: the UPR report's figures against gl.upr_detail, the ledger and
the premium rows (earned = written - change in UPR, in both currencies), its
opening from the previous period-end; the FX report's gains against the
revaluation entries on the monetary accounts, and their reversal on the next
period's first day; JSON and CSV that parse; the refusal of a period without a
committed period-end, saying what to do; both reports readable by the auditor."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli
from monthend import db
from test_period_end import CLOSING, PERIOD, POLICIES, PREMIUM, RATES, cli, load, rnd

pytestmark = pytest.mark.full

NEXT = "2025-02"
# A premium row of the next period: policy 2 (HOME, in force to 2025-07-10) endorsed.
NEXT_PREMIUM = (11, 2, date(2025, 2, 10), "ENDORSEMENT", "HOME", Decimal("60.00"), "EUR")

UPR_AMOUNTS = ("written", "opening_upr", "closing_upr", "upr_change", "earned")
DECIMALS = {
    *UPR_AMOUNTS, *(f"{k}_functional" for k in UPR_AMOUNTS), "booked_change",
    "booked_change_functional", "balance", "functional_carried", "closing_rate",
    "functional_revalued", "gain", "booked", "gains", "losses", "net"}


def _decimals(obj: dict[str, Any]) -> dict[str, Any]:
    for key in DECIMALS & obj.keys():
        if obj[key] is not None:
            assert isinstance(obj[key], str), f"{key} is not a decimal string: {obj[key]!r}"
            obj[key] = Decimal(obj[key])
    return obj


def report(target: db.Target, name: str, period: str = PERIOD, expect: int = 0
           ) -> dict[str, Any]:
    proc = monthend_cli(target, "report", name, "--period", period, "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout, object_hook=_decimals)


def report_csv(target: db.Target, name: str, period: str = PERIOD) -> list[dict[str, str]]:
    proc = monthend_cli(target, "report", name, "--period", period, "--csv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout)))


def posted_premium() -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """Written premium per line of business and currency from the premium rows
    of test_period_end that post (known policy, inside its term)."""
    out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for policy, day, txn_type, amount, currency in PREMIUM.values():
        if policy not in POLICIES or not POLICIES[policy][1] <= day < POLICIES[policy][2]:
            continue
        sign = -1 if txn_type == "CANCELLATION" else 1
        key = (POLICIES[policy][0], currency)
        w, w_f = out.get(key, (Decimal(0), Decimal(0)))
        out[key] = (w + sign * amount, w_f + sign * rnd(amount * RATES[currency], 2))
    return out


def upr_detail(conn: psycopg.Connection, batch_id: int | None, by: str = "line_of_business, "
               "currency") -> dict[tuple, tuple[Decimal, Decimal]]:
    rows = conn.execute(f"""
        SELECT {by}, sum(upr) AS upr, sum(upr_functional) AS upr_f
        FROM gl.upr_detail WHERE batch_id = %s GROUP BY {by}""", (batch_id,)).fetchall()
    keys = [k.strip() for k in by.split(",")]
    return {tuple(r[k] for k in keys): (r["upr"], r["upr_f"]) for r in rows}


def ledger_net(conn: psycopg.Connection, period: str, account: str
               ) -> dict[str, tuple[Decimal, Decimal]]:
    """Credits - debits on an account per transaction currency, every committed
    line of the period (reversals and reversing entries included)."""
    rows = conn.execute("""
        SELECT h.currency, sum(l.credit - l.debit) AS net,
               sum(l.functional_credit - l.functional_debit) AS net_f
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        JOIN batch.run AS r ON r.batch_id = h.batch_id AND r.status = 'COMMITTED'
        WHERE h.period = %s AND l.account_code = %s
        GROUP BY h.currency""", (period, account)).fetchall()
    return {r["currency"]: (r["net"], r["net_f"]) for r in rows}


def by_currency(rows: list[dict[str, Any]], key: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for row in rows:
        out[row["currency"]] = out.get(row["currency"], Decimal(0)) + row[key]
    return out


def month_end(target: db.Target, conn: psycopg.Connection) -> dict[str, Any]:
    load(conn)
    run = cli(target, "run", "--period", PERIOD)
    assert run["status"] == "COMMITTED"
    pe = cli(target, "period-end", "--period", PERIOD, "--workers", "2", "--range-size", "2")
    assert pe["status"] == "COMMITTED" and pe["kind"] == "PERIOD_END"
    return {"run": run, "pe": pe}


def next_month(target: db.Target, conn: psycopg.Connection) -> dict[str, Any]:
    """Close the period, open the next with the same rates and one premium row,
    and run it: its first batch reverses the period's FX revaluation."""
    conn.execute("CALL gl.close_period(%s, true)", (PERIOD,))
    conn.execute("CALL gl.open_period(%s, 'test')", (NEXT,))
    conn.execute("INSERT INTO gl.fx_rate (period, currency, rate) SELECT %s, currency, rate "
                 "FROM gl.fx_rate WHERE period = %s ON CONFLICT (period, currency) DO NOTHING",
                 (NEXT, PERIOD))
    for currency, rate in CLOSING.items():
        conn.execute("INSERT INTO gl.fx_closing_rate (period, currency, rate) "
                     "VALUES (%s, %s, %s)", (NEXT, currency, rate))
    conn.execute("INSERT INTO subledger.premium_transaction VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 NEXT_PREMIUM)
    run = cli(target, "run", "--period", NEXT)
    assert run["status"] == "COMMITTED"
    auto = conn.execute("SELECT * FROM batch.run WHERE kind = 'AUTO_REVERSAL'").fetchone()
    assert auto["status"] == "COMMITTED" and auto["period"] == NEXT
    return {"run": run, "auto": auto}


# --------------------------------------------------------------------------- upr


def test_upr_report_against_the_detail_and_the_ledger(target, conn) -> None:
    done = month_end(target, conn)
    pe = done["pe"]["batch_id"]
    doc = report(target, "upr")
    assert (doc["report"], doc["period"], doc["functional_currency"]) == ("upr", PERIOD, "USD")
    assert doc["period_end_batch_id"] == pe and doc["ok"] is True
    rows = {(r["line_of_business"], r["currency"]): r for r in doc["rows"]}
    assert list(rows) == sorted(rows)

    # Closing UPR: the period-end's detail, per line of business and currency
    # and per currency; the first period-end opens from nothing.
    detail = upr_detail(conn, pe)
    assert {k: (r["closing_upr"], r["closing_upr_functional"]) for k, r in rows.items()
            if r["closing_upr"] or r["closing_upr_functional"]} == detail
    per_currency = upr_detail(conn, pe, "currency")
    assert {c: v for c, v in by_currency(doc["rows"], "closing_upr").items() if v} == {
        c: v[0] for (c,), v in per_currency.items()}
    policies = conn.execute("SELECT line_of_business, currency, count(*) AS n FROM gl.upr_detail "
                            "WHERE batch_id = %s GROUP BY 1, 2", (pe,)).fetchall()
    assert {(p["line_of_business"], p["currency"]): p["n"] for p in policies} == {
        k: r["policies"] for k, r in rows.items() if r["policies"]}

    # Written premium: the premium rows that posted, and the ledger's 4050.
    assert {k: (r["written"], r["written_functional"]) for k, r in rows.items()} == \
        posted_premium()
    ledger = ledger_net(conn, PERIOD, "4050")
    assert {c: v for c, v in by_currency(doc["rows"], "written").items()} == {
        c: v[0] for c, v in ledger.items()}
    # Policy 5 expired on the period's last day: written, all of it earned.
    assert rows[("AUTO", "USD")]["written"] == Decimal("1850.00")

    for key, r in rows.items():
        assert r["opening_upr"] == r["opening_upr_functional"] == 0, key
        assert r["opening_batch_id"] is None and r["opening_period"] is None
        for suffix in ("", "_functional"):
            assert r[f"upr_change{suffix}"] == r[f"closing_upr{suffix}"] - r[f"opening_upr{suffix}"]
            assert r[f"earned{suffix}"] == r[f"written{suffix}"] - r[f"upr_change{suffix}"]
        assert (r["booked_change"], r["booked_change_functional"], r["booked_ok"]) == (
            r["upr_change"], r["upr_change_functional"], True)
    # The booked change is the UPR_CHANGE account's movement of the period-end.
    change = ledger_net(conn, PERIOD, "4060")
    assert {c: -v for c, v in by_currency(doc["rows"], "upr_change").items() if v} == {
        c: v[0] for c, v in change.items()}
    functional = {k: sum(r[f"{k}_functional"] for r in doc["rows"]) for k in UPR_AMOUNTS}
    assert doc["summary"]["functional"] == functional
    assert doc["summary"]["problems"] == [] and doc["summary"]["rows"] == len(rows)

    # CSV: the same rows, every column, exact decimals.
    lines = report_csv(target, "upr")
    assert [(r["line_of_business"], r["currency"]) for r in lines] == list(rows)
    for line in lines:
        row = rows[(line["line_of_business"], line["currency"])]
        for key in ("written", "closing_upr", "earned", "earned_functional",
                    "closing_upr_functional"):
            assert Decimal(line[key]) == row[key]
        assert line["booked_ok"] == "true" and line["opening_batch_id"] == ""
    # The plain table: its title, one line a row, the totals.
    table = monthend_cli(target, "report", "upr", "--period", PERIOD, check=True).stdout
    assert f"period {PERIOD} (OPEN), period-end batch {pe}" in table
    assert sum(1 for t in table.splitlines() if t.startswith("MARINE ")) == 2
    assert "opening UPR from no earlier period-end" in table
    assert f"earned {functional['earned']:,f}" in table

    # Both reports as the auditor (the CLI) and as the runner (SQL).
    as_auditor = db.Target(f"{target.conninfo} options='-c role=monthend_auditor'", "--dsn")
    for name in ("upr", "fx-revaluation"):
        proc = monthend_cli(as_auditor, "report", name, "--period", PERIOD, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["ok"] is True
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as runner:
        runner.execute("SET ROLE monthend_runner")
        for sql in ("SELECT count(*) AS n FROM gl.upr_report(%s)",
                    "SELECT count(*) AS n FROM gl.fx_revaluation_report(%s)"):
            assert runner.execute(sql, (PERIOD,)).fetchone()["n"] > 0


def test_upr_report_opens_from_the_previous_period_end(target, conn) -> None:
    first = month_end(target, conn)["pe"]["batch_id"]
    next_month(target, conn)
    # The next period has no period-end yet: refused, saying what to do.
    proc = monthend_cli(target, "report", "upr", "--period", NEXT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"monthend period-end --period {NEXT}" in proc.stderr

    pe = cli(target, "period-end", "--period", NEXT)
    assert pe["status"] == "COMMITTED"
    doc = report(target, "upr", NEXT)
    assert doc["ok"] is True and doc["period_end_batch_id"] == pe["batch_id"]
    assert doc["summary"]["opening"] == {"batch_id": first, "period": PERIOD}
    rows = {(r["line_of_business"], r["currency"]): r for r in doc["rows"]}
    opening, closing = upr_detail(conn, first), upr_detail(conn, pe["batch_id"])
    assert set(rows) == set(opening) | set(closing)
    for key, r in rows.items():
        assert (r["opening_batch_id"], r["opening_period"]) == (first, PERIOD)
        zero = (Decimal(0), Decimal(0))
        assert (r["opening_upr"], r["opening_upr_functional"]) == opening.get(key, zero), key
        assert (r["closing_upr"], r["closing_upr_functional"]) == closing.get(key, zero), key
        for suffix in ("", "_functional"):
            assert r[f"earned{suffix}"] == r[f"written{suffix}"] - (
                r[f"closing_upr{suffix}"] - r[f"opening_upr{suffix}"])
        assert r["booked_ok"] is True
    # Only the endorsement is written in the month; the rest of it is earned UPR.
    _, _, _, _, lob, amount, currency = NEXT_PREMIUM
    assert {k: r["written"] for k, r in rows.items() if r["written"]} == {(lob, currency): amount}
    auto = rows[("AUTO", "USD")]
    assert auto["earned"] == auto["opening_upr"] - auto["closing_upr"] > 0
    # The earlier period's report is unchanged by the later one.
    january = report(target, "upr")
    assert all(r["opening_batch_id"] is None for r in january["rows"])


def test_written_premium_counts_live_postings_only(target, conn, tmp_path: Path) -> None:
    """A posting reversed and posted again counts once: not the reversed entries,
    not the reversing ones."""
    load(conn)
    run = cli(target, "run", "--period", PERIOD)
    ids = tmp_path / "ids.csv"
    ids.write_text("source_type,source_id\nPREMIUM,1\nPREMIUM,2\n")
    reversal = cli(target, "reverse", str(run["batch_id"]), "--reason", "SOURCE_ERROR",
                   "--source-ids", str(ids))
    assert reversal["status"] == "COMMITTED"
    again = cli(target, "run", "--period", PERIOD)
    assert again["posted_rows"] == 2
    cli(target, "period-end", "--period", PERIOD)
    doc = report(target, "upr")
    assert doc["ok"] is True
    assert {(r["line_of_business"], r["currency"]): (r["written"], r["written_functional"])
            for r in doc["rows"]} == posted_premium()
    assert by_currency(doc["rows"], "written") == {
        c: v[0] for c, v in ledger_net(conn, PERIOD, "4050").items()}
    lines = conn.execute("SELECT count(*) AS n FROM gl.journal_entry_line AS l "
                         "WHERE l.account_code = '4050' AND l.batch_id = ANY(%s)",
                         ([run["batch_id"], reversal["batch_id"], again["batch_id"]],)
                         ).fetchone()["n"]
    assert lines == 8 + 2 + 2  # eight premium rows posted, two reversed, posted again


# --------------------------------------------------------------------------- fx revaluation


def test_fx_revaluation_report_and_its_reversal(target, conn) -> None:
    done = month_end(target, conn)
    pe = done["pe"]["batch_id"]
    doc = report(target, "fx-revaluation")
    assert doc["ok"] is True and doc["period_end_batch_id"] == pe
    rows = {(r["account_code"], r["currency"]): r for r in doc["rows"]}
    assert list(rows) == sorted(rows)

    detail = {(d["account_code"], d["currency"]): d for d in conn.execute(
        "SELECT * FROM batch.fx_revaluation_detail WHERE batch_id = %s", (pe,)).fetchall()}
    assert set(rows) == set(detail)
    names = {a["account_code"]: a["name"] for a in conn.execute(
        "SELECT account_code, name FROM gl.account").fetchall()}
    for key, r in rows.items():
        for column in ("balance", "functional_carried", "closing_rate", "functional_revalued",
                       "gain"):
            assert r[column] == detail[key][column], (key, column)
        assert r["account_name"] == names[key[0]]
        assert r["closing_rate"] == CLOSING[key[1]]
        assert r["gain"] == rnd(r["balance"] * r["closing_rate"], 2) - r["functional_carried"]

    # The gains are the revaluation entries' functional amounts on the monetary accounts.
    monetary = {a["account_code"] for a in conn.execute(
        "SELECT account_code FROM gl.account WHERE is_monetary").fetchall()}
    entries = conn.execute("""
        SELECT l.account_code, h.currency, h.je_number,
               sum(l.functional_debit - l.functional_credit) AS net_f
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE l.batch_id = %s AND h.source_type = 'FX_REVALUATION'
        GROUP BY 1, 2, 3""", (pe,)).fetchall()
    on_accounts = {(e["account_code"], e["currency"]): e for e in entries
                   if e["account_code"] in monetary}
    assert on_accounts, "the closing rates were chosen to move the balances"
    assert {k: r["gain"] for k, r in rows.items() if r["gain"]} == {
        k: e["net_f"] for k, e in on_accounts.items()}
    for key, r in rows.items():
        entry = on_accounts.get(key)
        assert r["je_number"] == (entry["je_number"] if entry else None)
        assert r["booked"] == (entry["net_f"] if entry else None)
        assert r["booked_ok"] is True
        assert r["reversed"] is (False if entry else None) and r["reversal_batch_id"] is None
    summary = doc["summary"]
    assert summary["net"] == sum(r["gain"] for r in rows.values())
    assert summary["gains"] == sum(r["gain"] for r in rows.values() if r["gain"] > 0)
    assert (summary["entries"], summary["not_reversed"]) == (len(on_accounts), len(on_accounts))
    table = monthend_cli(target, "report", "fx-revaluation", "--period", PERIOD,
                         check=True).stdout
    assert "not reversed yet" in table and f"period-end batch {pe}" in table

    # The next period's first batch reverses them on its first day.
    auto = next_month(target, conn)["auto"]
    doc = report(target, "fx-revaluation")
    assert doc["ok"] is True and doc["period_status"] == "CLOSED"
    reversing = {r["reverses_je_id"]: r for r in conn.execute(
        "SELECT reverses_je_id, je_number, je_date FROM gl.journal_entry_header "
        "WHERE batch_id = %s", (auto["batch_id"],)).fetchall()}
    originals = {r["je_number"]: r["je_id"] for r in conn.execute(
        "SELECT je_number, je_id FROM gl.journal_entry_header WHERE batch_id = %s",
        (pe,)).fetchall()}
    for r in doc["rows"]:
        if r["je_number"] is None:
            assert r["reversed"] is None and r["reversal_batch_id"] is None
            continue
        mirror = reversing[originals[r["je_number"]]]
        assert r["reversed"] is True and r["reversal_batch_id"] == auto["batch_id"]
        assert (r["reversal_je_number"], r["reversal_je_date"]) == (
            mirror["je_number"], mirror["je_date"].isoformat())
        assert r["reversal_je_date"] == f"{NEXT}-01"
    assert doc["summary"]["reversal_batches"] == [auto["batch_id"]]
    assert doc["summary"]["not_reversed"] == 0

    # CSV parses, a line a row, booleans spelled out.
    lines = report_csv(target, "fx-revaluation")
    assert [(x["account_code"], x["currency"]) for x in lines] == list(rows)
    assert {x["reversed"] for x in lines} <= {"true", ""}
    assert sum(Decimal(x["gain"]) for x in lines) == doc["summary"]["net"]


# --------------------------------------------------------------------------- refusals


def test_reports_refused_without_a_committed_period_end(target, conn) -> None:
    load(conn)
    for name in ("upr", "fx-revaluation"):
        proc = monthend_cli(target, "report", name, "--period", PERIOD)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"period {PERIOD} has no committed period-end" in proc.stderr
        assert f"monthend period-end --period {PERIOD}" in proc.stderr
        as_json = monthend_cli(target, "report", name, "--period", PERIOD, "--json")
        assert as_json.returncode == 2
        assert json.loads(as_json.stdout)["status"] == "ERROR"
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no committed"):
        conn.execute("SELECT * FROM gl.upr_report(%s)", (PERIOD,))
    unknown = monthend_cli(target, "report", "upr", "--period", "2031-05")
    assert unknown.returncode == 2 and "not in gl.accounting_period" in unknown.stderr
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM gl.fx_revaluation_report('2031-05')")
    # Options of other reports are refused.
    for extra in (("--threshold", "10"), ("--batch", "1")):
        proc = monthend_cli(target, "report", "upr", "--period", PERIOD, *extra)
        assert proc.returncode == 2 and proc.stderr.strip(), extra

    # A draft period-end is not reported until it is finalized; the hint says so.
    cli(target, "run", "--period", PERIOD)
    draft = cli(target, "period-end", "--period", PERIOD, "--draft")
    assert draft["status"] == "DRAFT"
    proc = monthend_cli(target, "report", "upr", "--period", PERIOD)
    assert proc.returncode == 2
    assert f"monthend finalize {draft['batch_id']}" in proc.stderr
    cli(target, "finalize", str(draft["batch_id"]))
    assert report(target, "upr")["period_end_batch_id"] == draft["batch_id"]

    # Reversed, it no longer stands for the period: run it again, the hint says.
    reversal = cli(target, "reverse", str(draft["batch_id"]), "--reason", "OTHER")
    assert reversal["status"] == "COMMITTED"
    proc = monthend_cli(target, "report", "fx-revaluation", "--period", PERIOD)
    assert proc.returncode == 2
    assert f"period-end batch {draft['batch_id']} was reversed" in proc.stderr
    assert f"monthend period-end --period {PERIOD}" in proc.stderr
