"""Period-end entries: the UPR of hand-built policies computed here independently
(daily pro rata, to the minor unit) against gl.upr_detail and the entries of the
PERIOD_END batch; the FX revaluation of hand-built balances at changed closing
rates, and its automatic reversal on the first day of the next period; the close
that refuses a period without its period-end; the refusals of period-end."""

from __future__ import annotations

import json
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest

from conftest import monthend_cli

pytestmark = pytest.mark.full

PERIOD = "2025-01"
E = date(2025, 1, 31)
RATES = {"USD": Decimal(1), "EUR": Decimal("1.0842"), "JPY": Decimal("0.006712"),
         "BHD": Decimal("2.6525")}
CLOSING = {"EUR": Decimal("1.1010"), "JPY": Decimal("0.006500"), "BHD": Decimal("2.6525")}
MINOR = {"USD": 2, "EUR": 2, "JPY": 0, "BHD": 3}

# policy_id: (line of business, inception, expiry)
POLICIES = {
    1: ("AUTO", date(2025, 1, 30), date(2026, 1, 30)),   # 12 months written on the 30th
    2: ("HOME", date(2025, 1, 10), date(2025, 7, 10)),   # 6 months
    3: ("HOME", date(2024, 10, 1), date(2025, 10, 1)),   # endorsed mid-term
    4: ("AUTO", date(2025, 1, 5), date(2026, 1, 5)),     # partly cancelled
    5: ("AUTO", date(2024, 7, 31), date(2025, 1, 31)),   # expires on E
    6: ("MARINE", date(2025, 1, 17), date(2026, 1, 17)),  # JPY
    7: ("MARINE", date(2025, 1, 20), date(2025, 7, 20)),  # BHD
}
# txn_id: (policy, date, type, amount, currency)
PREMIUM = {
    1: (1, date(2025, 1, 30), "NEW_BUSINESS", Decimal("1200.00"), "USD"),
    2: (2, date(2025, 1, 10), "NEW_BUSINESS", Decimal("600.00"), "EUR"),
    3: (3, date(2025, 1, 15), "ENDORSEMENT", Decimal("100.00"), "EUR"),
    4: (4, date(2025, 1, 5), "NEW_BUSINESS", Decimal("1000.00"), "USD"),
    5: (4, date(2025, 1, 20), "CANCELLATION", Decimal("400.00"), "USD"),
    6: (5, date(2025, 1, 2), "ENDORSEMENT", Decimal("50.00"), "USD"),
    7: (6, date(2025, 1, 17), "NEW_BUSINESS", Decimal("120000"), "JPY"),
    8: (7, date(2025, 1, 20), "NEW_BUSINESS", Decimal("250.125"), "BHD"),
    # Dead letters of their own: no such policy; dated outside the term.
    9: (99, date(2025, 1, 12), "NEW_BUSINESS", Decimal("10.00"), "USD"),
    10: (2, date(2025, 1, 8), "ENDORSEMENT", Decimal("10.00"), "EUR"),
}
# claim_id: (date, type, amount, currency): monetary balances in EUR and JPY.
CLAIMS = {
    1: (date(2025, 1, 21), "LOSS_PAYMENT", Decimal("500.00"), "EUR"),
    2: (date(2025, 1, 22), "LOSS_PAYMENT", Decimal("30000"), "JPY"),
}


def rnd(value: Decimal, places: int) -> Decimal:
    """numeric round(): half away from zero."""
    quantum = Decimal(1).scaleb(-places)
    sign = -1 if value < 0 else 1
    return sign * abs(value).quantize(quantum, rounding=ROUND_HALF_UP)


def expected_upr() -> dict[tuple[int, str], dict]:
    """The UPR of every policy in force at E, per currency, by the formula."""
    written: dict[tuple[int, str], list[Decimal]] = {}
    for policy, day, txn_type, amount, currency in PREMIUM.values():
        if policy not in POLICIES or not POLICIES[policy][1] <= day < POLICIES[policy][2]:
            continue
        sign = -1 if txn_type == "CANCELLATION" else 1
        w = written.setdefault((policy, currency), [Decimal(0), Decimal(0)])
        w[0] += sign * amount
        w[1] += sign * rnd(amount * RATES[currency], 2)
    out = {}
    for (policy, currency), (w, w_f) in written.items():
        lob, inception, expiry = POLICIES[policy]
        if not inception <= E < expiry:
            continue
        term, unexpired = (expiry - inception).days, (expiry - E).days
        out[(policy, currency)] = {
            "line_of_business": lob, "written_to_date": w, "term_days": term,
            "unexpired_days": unexpired,
            "upr": rnd(w * unexpired / term, MINOR[currency]),
            "upr_functional": rnd(w_f * unexpired / term, 2)}
    return out


def load(conn: psycopg.Connection) -> None:
    # As a fresh database has it (the tests' template does not).
    conn.execute("UPDATE gl.setting SET period_end_required = true")
    conn.execute("CALL gl.open_period(%s, 'period-end test')", (PERIOD,))
    for currency, rate in RATES.items():
        conn.execute("INSERT INTO gl.fx_rate (period, currency, rate) VALUES (%s, %s, %s) "
                     "ON CONFLICT (period, currency) DO UPDATE SET rate = excluded.rate",
                     (PERIOD, currency, rate))
    for currency, rate in CLOSING.items():
        conn.execute("INSERT INTO gl.fx_closing_rate (period, currency, rate) "
                     "VALUES (%s, %s, %s)", (PERIOD, currency, rate))
    for policy, (lob, inception, expiry) in POLICIES.items():
        conn.execute("INSERT INTO subledger.policy VALUES (%s, %s, %s, %s)",
                     (policy, lob, inception, expiry))
    for txn, (policy, day, txn_type, amount, currency) in PREMIUM.items():
        lob = POLICIES.get(policy, ("AUTO",))[0]
        conn.execute("INSERT INTO subledger.premium_transaction VALUES "
                     "(%s, %s, %s, %s, %s, %s, %s)",
                     (txn, policy, day, txn_type, lob, amount, currency))
    for claim, (day, txn_type, amount, currency) in CLAIMS.items():
        conn.execute("INSERT INTO subledger.claims_transaction VALUES "
                     "(%s, 1, %s, %s, 'AUTO', %s, %s)", (claim, day, txn_type, amount, currency))


def cli(target, *args: str, expect: int = 0) -> dict:
    proc = monthend_cli(target, *args, "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}


def balances(conn, batch_ids: list[int]) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    rows = conn.execute("""
        SELECT l.account_code, h.currency, sum(l.debit - l.credit) AS net,
               sum(l.functional_debit - l.functional_credit) AS net_f
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE l.batch_id = ANY(%s)
        GROUP BY 1, 2""", (batch_ids,)).fetchall()
    return {(r["account_code"], r["currency"]): (r["net"], r["net_f"]) for r in rows}


def test_upr_fx_revaluation_and_automatic_reversal(target, conn) -> None:
    load(conn)
    run = cli(target, "run", "--period", PERIOD)
    assert run["status"] == "COMMITTED"
    assert run["dead_letters_by_reason"] == {"POLICY_UNKNOWN": 1, "OUTSIDE_POLICY_TERM": 1}

    # Written, not earned: the run books written premium and leaves the UPR alone.
    posted = balances(conn, [run["batch_id"]])
    assert not any(account == "2100" for account, _ in posted)
    assert posted[("4050", "USD")][0] == -(Decimal("1200.00") + Decimal("1000.00")
                                           - Decimal("400.00") + Decimal("50.00"))

    # The close refuses the period without its period-end.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="period_end_posted"):
        conn.execute("CALL gl.close_period(%s, true)", (PERIOD,))

    pe = cli(target, "period-end", "--period", PERIOD, "--workers", "2", "--range-size", "2")
    assert pe["status"] == "COMMITTED" and pe["kind"] == "PERIOD_END"

    # The UPR of every policy, to the minor unit.
    want = expected_upr()
    got = {(r["policy_id"], r["currency"]): r for r in conn.execute(
        "SELECT * FROM gl.upr_detail WHERE period = %s AND batch_id = %s",
        (PERIOD, pe["batch_id"])).fetchall()}
    assert set(got) == set(want)
    for key, row in want.items():
        for column, value in row.items():
            assert got[key][column] == value, (key, column)
    assert (1, "USD") in want and want[(1, "USD")]["unexpired_days"] == 364
    assert (5, "USD") not in want  # expired on E

    # The UPR account's balance per currency after the period-end = the UPR.
    after = balances(conn, [run["batch_id"], pe["batch_id"]])
    for currency in {c for _, c in want}:
        upr = sum(r["upr"] for (_, c), r in want.items() if c == currency)
        upr_f = sum(r["upr_functional"] for (_, c), r in want.items() if c == currency)
        assert after[("2100", currency)] == (-upr, -upr_f)
        # The change in UPR (the first period-end: from nothing) on the P&L side:
        # earned premium of the month = written - this change.
        assert after[("4060", currency)] == (upr, upr_f)

    # FX revaluation: every monetary account's foreign balance at the closing rate.
    monetary = {r["account_code"] for r in conn.execute(
        "SELECT account_code FROM gl.account WHERE is_monetary").fetchall()}
    expected_gain = {}
    for (account, currency), (net, net_f) in posted.items():
        if account in monetary and currency != "USD" and (net or net_f):
            gain = rnd(net * CLOSING[currency], 2) - net_f
            if gain:
                expected_gain[(account, currency)] = gain
    revaluation = conn.execute("""
        SELECT l.account_code, h.currency, sum(l.functional_debit - l.functional_credit) AS net_f,
               sum(l.debit) + sum(l.credit) AS amounts
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE l.batch_id = %s AND h.source_type = 'FX_REVALUATION'
        GROUP BY 1, 2""", (pe["batch_id"],)).fetchall()
    on_accounts = {(r["account_code"], r["currency"]): r["net_f"] for r in revaluation
                   if r["account_code"] in monetary}
    assert on_accounts == expected_gain
    assert all(r["amounts"] == 0 for r in revaluation)  # functional currency only
    assert expected_gain, "the closing rates were chosen to move the balances"

    # Re-running a committed period-end is refused, saying how to correct it.
    again = monthend_cli(target, "period-end", "--period", PERIOD)
    assert again.returncode != 0 and "reverse" in again.stderr

    # The close passes now; the next period's first run reverses the revaluation
    # on its first day, and the two net to zero.
    conn.execute("CALL gl.close_period(%s, true)", (PERIOD,))
    conn.execute("CALL gl.open_period('2025-02', 'test')")
    conn.execute("INSERT INTO gl.fx_rate (period, currency, rate) SELECT '2025-02', currency, rate "
                 "FROM gl.fx_rate WHERE period = %s", (PERIOD,))
    nxt = cli(target, "run", "--period", "2025-02")
    auto = conn.execute("SELECT * FROM batch.run WHERE kind = 'AUTO_REVERSAL'").fetchone()
    assert auto["status"] == "COMMITTED" and auto["reverses_batch_id"] == pe["batch_id"]
    assert auto["period"] == "2025-02" and auto["batch_id"] < nxt["batch_id"]
    dates = conn.execute("SELECT DISTINCT je_date FROM gl.journal_entry_header "
                         "WHERE batch_id = %s", (auto["batch_id"],)).fetchall()
    assert [d["je_date"] for d in dates] == [date(2025, 2, 1)]
    netted = conn.execute("""
        SELECT l.account_code, h.currency, sum(l.functional_debit - l.functional_credit) AS net_f
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE l.batch_id = ANY(%s) AND h.source_type = 'FX_REVALUATION'
        GROUP BY 1, 2""", ([pe["batch_id"], auto["batch_id"]],)).fetchall()
    assert netted and all(r["net_f"] == 0 for r in netted)
    assert conn.execute("SELECT batch.auto_reversal_due('2025-02')").fetchone()[
        "auto_reversal_due"] is None

    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_period_end_is_corrected_by_reversal_and_a_new_one(target, conn) -> None:
    """A committed period-end is not run again; reversed (the reversal machinery
    unposts its items and its entries are mirrored), it no longer stands for the
    period, and a new period-end books the same UPR again."""
    load(conn)
    cli(target, "run", "--period", PERIOD)
    first = cli(target, "period-end", "--period", PERIOD)
    upr = conn.execute("SELECT policy_id, currency, upr, upr_functional FROM gl.upr_detail "
                       "WHERE batch_id = %s ORDER BY 1, 2", (first["batch_id"],)).fetchall()
    reversal = cli(target, "reverse", str(first["batch_id"]), "--reason", "OTHER",
                   "--note", "closing rates corrected")
    assert reversal["status"] == "COMMITTED"
    assert reversal["journal_entries"] == first["journal_entries"]
    assert conn.execute("SELECT gl.period_end_batch(%s) AS b", (PERIOD,)).fetchone()["b"] is None
    # Mirrored: the UPR and FX accounts are back where the run left them.
    net = balances(conn, [first["batch_id"], reversal["batch_id"]])
    assert all(v == (0, 0) for v in net.values())

    second = cli(target, "period-end", "--period", PERIOD)
    assert second["status"] == "COMMITTED"
    assert conn.execute("SELECT gl.period_end_batch(%s) AS b", (PERIOD,)).fetchone()[
        "b"] == second["batch_id"]
    assert conn.execute("SELECT policy_id, currency, upr, upr_functional FROM gl.upr_detail "
                        "WHERE batch_id = %s ORDER BY 1, 2", (second["batch_id"],)
                        ).fetchall() == upr
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_period_end_refusals_say_what_to_do(target, conn) -> None:
    load(conn)
    # Rows not yet posted: the written premium is incomplete.
    refused = monthend_cli(target, "period-end", "--period", PERIOD, "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "monthend run --period 2025-01" in refused.stdout + refused.stderr
    cli(target, "cancel", str(json.loads(refused.stdout)["batch_id"]))
    cli(target, "run", "--period", PERIOD)
    # A currency with a monetary balance and no closing rate stops the allocation.
    conn.execute("DELETE FROM gl.fx_closing_rate WHERE currency = 'JPY'")
    stopped = monthend_cli(target, "period-end", "--period", PERIOD)
    assert stopped.returncode != 0
    assert "JPY" in stopped.stderr and "gl.fx_closing_rate" in stopped.stderr
    batch_id = conn.execute("SELECT batch_id FROM batch.run WHERE kind = 'PERIOD_END' "
                            "AND status NOT IN ('CANCELLED', 'COMMITTED')").fetchone()["batch_id"]
    conn.execute("INSERT INTO gl.fx_closing_rate VALUES (%s, 'JPY', %s)",
                 (PERIOD, CLOSING["JPY"]))
    resumed = cli(target, "resume", str(batch_id))
    assert resumed["status"] == "COMMITTED"
    # A period that is not open.
    closed = monthend_cli(target, "period-end", "--period", "2031-01")
    assert closed.returncode == 2 and "monthend period open" in closed.stderr


def test_a_period_end_draft_is_reviewed_then_finalized(target, conn) -> None:
    """--draft builds and validates the period-end outside the ledger; finalize
    commits it (its UPR detail attached then) once nothing it read changed."""
    load(conn)
    cli(target, "run", "--period", PERIOD)
    draft = cli(target, "period-end", "--period", PERIOD, "--draft")
    assert draft["status"] == "DRAFT" and draft["mode"] == "DRAFT"
    assert conn.execute("SELECT count(*) AS n FROM gl.journal_entry_header "
                        "WHERE batch_id = %s", (draft["batch_id"],)).fetchone()["n"] == 0
    assert conn.execute("SELECT count(*) AS n FROM gl.upr_detail").fetchone()["n"] == 0
    # A closing rate changed after the draft was built: finalize refuses.
    conn.execute("UPDATE gl.fx_closing_rate SET rate = rate * 1.01 WHERE currency = 'EUR'")
    refused = monthend_cli(target, "finalize", str(draft["batch_id"]))
    assert refused.returncode != 0 and "closing rates" in refused.stderr
    conn.execute("UPDATE gl.fx_closing_rate SET rate = %s WHERE currency = 'EUR'",
                 (CLOSING["EUR"],))
    final = cli(target, "finalize", str(draft["batch_id"]))
    assert final["status"] == "COMMITTED"
    assert conn.execute("SELECT gl.period_end_batch(%s) AS b", (PERIOD,)).fetchone()[
        "b"] == draft["batch_id"]
    assert conn.execute("SELECT count(*) AS n FROM gl.upr_detail WHERE batch_id = %s",
                        (draft["batch_id"],)).fetchone()["n"] == len(expected_upr())


def test_a_period_end_stays_whole_and_current(target, conn) -> None:
    """A period-end is reversed whole and in its own period; a run committed after
    it makes it stale, and the close says to book it again; a period-end draft
    is discarded with what it holds."""
    load(conn)
    cli(target, "run", "--period", PERIOD)
    draft = cli(target, "period-end", "--period", PERIOD, "--draft")
    discarded = monthend_cli(target, "discard", str(draft["batch_id"]))
    assert discarded.returncode == 0, discarded.stderr
    assert conn.execute("SELECT count(*) AS n FROM batch.period_end_item WHERE batch_id = %s",
                        (draft["batch_id"],)).fetchone()["n"] == 0

    pe = cli(target, "period-end", "--period", PERIOD)
    item = conn.execute("SELECT item_kind, item_id FROM batch.period_end_item "
                        "WHERE batch_id = %s LIMIT 1", (pe["batch_id"],)).fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="reversed whole"):
        conn.execute("CALL batch.start_reversal(%s, 'OTHER', NULL, 'side', NULL, %s, %s, "
                     "2, 10000, 3, NULL)",
                     (pe["batch_id"], [item["item_kind"]], [item["item_id"]]))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="reversed whole"):
        conn.execute("CALL batch.start_reversal(%s, 'OTHER', NULL, 'side', '2025-02', NULL, "
                     "NULL, 2, 10000, 3, NULL)", (pe["batch_id"],))

    # A row arrives and is posted after the period-end: the close refuses.
    conn.execute("INSERT INTO subledger.premium_transaction VALUES "
                 "(50, 1, '2025-01-31', 'ENDORSEMENT', 'AUTO', 10.00, 'USD')")
    cli(target, "run", "--period", PERIOD)
    stale = monthend_cli(target, "period", "close", PERIOD, "--carry-dead-letters")
    assert stale.returncode == 2 and "period_end_posted" in stale.stderr
    assert f"monthend reverse {pe['batch_id']}" in stale.stderr


def test_a_batch_of_an_earlier_period_committed_after_the_period_end_makes_it_stale(
        target, conn) -> None:
    """A period-end reads the posted premium and the ledger of every period up to
    its own: a batch of an earlier, still open period committed after it started
    may be in none, some or all of its figures, and its close says so."""
    load(conn)
    conn.execute("CALL subledger.generate_transactions('2025-02', 300, 0, 5, NULL, NULL, NULL)")
    cli(target, "run", "--period", "2025-02")
    pe = cli(target, "period-end", "--period", "2025-02")

    def period_end_check() -> dict:
        return conn.execute("SELECT passed, actual, hint FROM gl.period_close_checks('2025-02') "
                            "WHERE check_name = 'period_end_posted'").fetchone()

    assert period_end_check()["passed"] is True
    late = cli(target, "run", "--period", PERIOD)
    check = period_end_check()
    assert check["passed"] is False
    assert check["actual"] == f"batch {pe['batch_id']}, before batch(es) {late['batch_id']}"
    assert f"monthend reverse {pe['batch_id']}" in check["hint"]
    assert "finish period 2025-01 first" in check["hint"]
    assert conn.execute("SELECT ledger_batches FROM batch.run WHERE batch_id = %s",
                        (pe["batch_id"],)).fetchone()["ledger_batches"] == [
        pe["batch_id"] - 1]
