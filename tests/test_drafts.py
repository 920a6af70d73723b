"""Draft runs: built and validated like a run, outside the ledger; finalized into
exactly the posting a run makes, only while their inputs are unchanged;
discarded without a trace but the audit chain's; killed and resumed like a run."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from conftest import monthend_cli
from faults import (
    DEFAULT,
    check_invariants,
    connect,
    gate,
    hold_lock,
    kill_process,
    restart,
    start_cli,
    wait_for_lock_wait,
    wait_until_held,
)
from ledger_fingerprint import ledger_fingerprint
from monthend import db

pytestmark = pytest.mark.full

PERIOD = DEFAULT.period


def draft(target: db.Target, expect: int = 0) -> dict[str, Any]:
    proc = monthend_cli(target, *DEFAULT.run_args(2, "--draft"))
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def draft_of(target: db.Target, period: str) -> dict[str, Any]:
    proc = monthend_cli(target, "run", "--period", period, "--draft", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def finalize(target: db.Target, batch_id: int, expect: int = 0
             ) -> tuple[dict[str, Any], str]:
    proc = monthend_cli(target, "finalize", str(batch_id), "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout), proc.stderr


def ledger_rows(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute("SELECT (SELECT count(*) FROM gl.journal_entry_header) AS headers, "
                       "(SELECT count(*) FROM gl.journal_entry_line) AS lines, "
                       "(SELECT je_numbers_used FROM gl.accounting_period "
                       " WHERE period = %s) AS used", (PERIOD,)).fetchone()
    return row["headers"], row["lines"], row["used"]


def audit_events(conn: psycopg.Connection, batch_id: int) -> list[str]:
    """The batch's audit events but its ranges'."""
    return [r["event"] for r in conn.execute(
        "SELECT event FROM audit.log WHERE batch_id = %s AND event <> 'RANGE_DONE' "
        "ORDER BY seq", (batch_id,))]


def test_a_draft_leaves_the_ledger_and_the_numbering_untouched(target, conn) -> None:
    DEFAULT.generate(target)
    result = draft(target)
    assert (result["status"], result["mode"], result["kind"]) == ("DRAFT", "DRAFT", "RUN")
    assert result["journal_entries"] > 0 and result["digest"]
    assert ledger_rows(conn) == (0, 0, 0)
    assert audit_events(conn, result["batch_id"]) == ["BATCH_STARTED", "PREFLIGHT_RESULT",
                                                      "DRAFT_BUILT"]
    built = conn.execute("SELECT payload FROM audit.log WHERE event = 'DRAFT_BUILT'"
                         ).fetchone()["payload"]
    assert built["digest"] == result["digest"]
    assert set(built["input_fingerprint"]) == {
        "source_rows", "posting_rules", "journal_templates", "currencies",
        "accounts", "lines_of_business", "fx_rates", "settings", "policies"}
    assert sum(t["rows"] for t in built["input_fingerprint"]["source_rows"].values()) == \
        DEFAULT.txns - conn.execute(
            "SELECT count(*) AS n FROM subledger.source_transaction "
            "WHERE txn_date IS NULL OR to_char(txn_date, 'YYYY-MM') <> %s",
            (PERIOD,)).fetchone()["n"]

    # A final run of the period waits for the draft, and says how to end it.
    proc = monthend_cli(target, *DEFAULT.run_args())
    assert proc.returncode == 2
    draft_id = result["batch_id"]
    assert (f"period {PERIOD} has draft {draft_id} (status DRAFT); a final run waits for it "
            f"to be finalized or discarded\nPost it with \"monthend finalize {draft_id}\", or "
            f"remove it with \"monthend discard {draft_id}\" and run again.") in proc.stderr
    # A draft is not a posting: it is neither reversed nor listed as posted.
    assert monthend_cli(target, "reverse", str(draft_id), "--reason", "OTHER").returncode == 2


def test_finalize_of_an_unchanged_draft_is_a_clean_run(target, conn, clean_fingerprint) -> None:
    DEFAULT.generate(target)
    built = draft(target)
    result, _ = finalize(target, built["batch_id"])
    assert (result["status"], result["mode"]) == ("COMMITTED", "DRAFT")
    assert result["digest"] == built["digest"]
    assert ledger_fingerprint(conn, PERIOD) == clean_fingerprint(DEFAULT)
    events = audit_events(conn, built["batch_id"])
    assert events[:5] == ["BATCH_STARTED", "PREFLIGHT_RESULT", "DRAFT_BUILT",
                          "DRAFT_FINALIZED", "BATCH_COMMITTED"]
    assert monthend_cli(target, "verify").returncode == 0
    # Finalized once: the second time is refused, and so is a discard.
    _, err = finalize(target, built["batch_id"], expect=2)
    assert f"draft {built['batch_id']} is already finalized" in err
    proc = monthend_cli(target, "discard", str(built["batch_id"]))
    assert proc.returncode == 2 and "is finalized and cannot be discarded" in proc.stderr


def test_status_metrics_and_health_show_a_draft(target, conn, tmp_path) -> None:
    DEFAULT.generate(target)
    built = draft(target)
    status = monthend_cli(target, "status", str(built["batch_id"]))
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"draft {built['batch_id']} built: ")
    assert f"`monthend finalize {built['batch_id']}`" in status.stdout
    watch = monthend_cli(target, "watch", str(built["batch_id"]), "--once")
    assert watch.returncode == 0, watch.stderr
    assert f"monthend draft batch {built['batch_id']} · {PERIOD} · DRAFT · draft" in watch.stdout

    path = tmp_path / "monthend.prom"
    monthend_cli(target, "metrics", "--textfile", str(path), check=True)
    info = [line for line in path.read_text().splitlines()
            if line.startswith("monthend_batch_info{")]
    assert len(info) == 1 and 'mode="DRAFT"' in info[0] and 'status="DRAFT"' in info[0]
    assert "monthend_batch_running{" in path.read_text()
    running = [line for line in path.read_text().splitlines()
               if line.startswith("monthend_batch_running{")]
    assert running[0].endswith(" 0.0")

    def old_drafts() -> dict[str, Any]:
        return conn.execute("SELECT status, value, action FROM batch.health_check "
                            "WHERE check_name = 'old_drafts'").fetchone()

    assert old_drafts() == {"status": "OK", "value": "0/1", "action": "Nothing to do"}
    conn.execute("UPDATE batch.run SET started_at = started_at - interval '8 days' "
                 "WHERE batch_id = %s", (built["batch_id"],))
    assert old_drafts() == {
        "status": "WARNING", "value": "1/1",
        "action": f"Finalize or discard them (monthend finalize {built['batch_id']} / "
                  f"monthend discard {built['batch_id']}): their staging tables hold space"}


def first_claimed(conn: psycopg.Connection, source_type: str) -> int:
    return conn.execute("SELECT min(source_id) AS i FROM batch.source_claim "
                        "WHERE source_type = %s", (source_type,)).fetchone()["i"]


# Each change, the words the refusal names it with, and the statement undoing it.
CHANGES = {
    "source row added": (
        "INSERT INTO subledger.premium_transaction (txn_id, policy_id, payment_date, "
        "txn_type, line_of_business, amount, currency) VALUES (990001, 7, '2025-01-20', "
        "'RENEWAL', 'HOME', 100.00, 'USD')",
        "source rows of 2025-01 (PREMIUM {p} rows then, {p1} now)",
        "DELETE FROM subledger.premium_transaction WHERE txn_id = 990001"),
    "source row changed": (
        "UPDATE subledger.premium_transaction SET amount = amount + 1 "
        "WHERE txn_id = {premium}",
        "source rows of 2025-01 (PREMIUM rows changed in place)",
        "UPDATE subledger.premium_transaction SET amount = amount - 1 "
        "WHERE txn_id = {premium}"),
    "source row removed": (
        "CREATE TEMPORARY TABLE removed AS SELECT * FROM subledger.claims_transaction "
        "WHERE claim_id = {claim}; "
        "DELETE FROM subledger.claims_transaction WHERE claim_id = {claim}",
        "source rows of 2025-01 (CLAIM {c} rows then, {c1} now)",
        "INSERT INTO subledger.claims_transaction SELECT * FROM removed"),
    "posting rule ratio changed": (
        "CREATE TEMPORARY TABLE old_rule AS SELECT * FROM gl.posting_rule WHERE ratio "
        "IS NOT NULL ORDER BY source_type, txn_type, je_seq, line_no LIMIT 1; "
        "UPDATE gl.posting_rule AS r SET ratio = r.ratio + 0.01 FROM old_rule AS o "
        "WHERE (r.source_type, r.txn_type, r.je_seq, r.line_no) "
        "= (o.source_type, o.txn_type, o.je_seq, o.line_no)",
        "posting rules (gl.posting_rule)",
        "UPDATE gl.posting_rule AS r SET ratio = o.ratio FROM old_rule AS o "
        "WHERE (r.source_type, r.txn_type, r.je_seq, r.line_no) "
        "= (o.source_type, o.txn_type, o.je_seq, o.line_no)"),
    "FX rate changed": (
        "CREATE TEMPORARY TABLE old_rate AS SELECT * FROM gl.fx_rate "
        "WHERE period = '2025-01' AND currency = 'EUR'; "
        "UPDATE gl.fx_rate SET rate = rate + 0.01 WHERE period = '2025-01' AND currency = 'EUR'",
        "FX rates (gl.fx_rate)",
        "UPDATE gl.fx_rate AS f SET rate = o.rate FROM old_rate AS o "
        "WHERE (f.period, f.currency) = (o.period, o.currency)"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_finalize_is_refused_naming_what_changed(target, conn, change: str) -> None:
    DEFAULT.generate(target)
    built = draft(target)
    counts = {r["source_type"]: r["n"] for r in conn.execute(
        "SELECT s.source_type, count(*) AS n FROM subledger.source_transaction AS s "
        "WHERE to_char(s.txn_date, 'YYYY-MM') = %s GROUP BY 1", (PERIOD,))}
    names = {"premium": first_claimed(conn, "PREMIUM"), "claim": first_claimed(conn, "CLAIM"),
             "p": counts["PREMIUM"], "p1": counts["PREMIUM"] + 1,
             "c": counts["CLAIM"], "c1": counts["CLAIM"] - 1}
    statement, named, undo = CHANGES[change]
    conn.execute(statement.format(**names))

    _, err = finalize(target, built["batch_id"], expect=2)
    draft_id = built["batch_id"]
    assert (f"draft {draft_id} cannot be finalized: what it was built from has changed: "
            f"{named.format(**names)}") in err
    assert (f"Build it again with \"monthend run --period {PERIOD} --draft\" (it replaces "
            f"this one), or discard it with \"monthend discard {draft_id}\".") in err
    # Nothing happened: the draft is as it was, the ledger empty.
    assert conn.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                        (draft_id,)).fetchone()["status"] == "DRAFT"
    assert ledger_rows(conn) == (0, 0, 0)
    assert "DRAFT_FINALIZED" not in audit_events(conn, draft_id)

    # The fingerprint is exact: undone, the inputs are the draft's again.
    conn.execute(undo.format(**names))
    result, _ = finalize(target, draft_id)
    assert result["status"] == "COMMITTED" and result["digest"] == built["digest"]


def footprint(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything a batch writes outside the audit chain."""
    return conn.execute("""
        SELECT (SELECT count(*) FROM batch.run) AS runs,
               (SELECT count(*) FROM batch.range) AS ranges,
               (SELECT count(*) FROM batch.range_total) AS range_totals,
               (SELECT count(*) FROM batch.validation_result) AS checks,
               (SELECT count(*) FROM batch.control_total) AS control_totals,
               (SELECT count(*) FROM batch.event) AS events,
               (SELECT count(*) FROM batch.kpi) AS kpis,
               (SELECT count(*) FROM batch.source_claim) AS claims,
               (SELECT count(*) FROM batch.dead_letter) AS dead_letters,
               (SELECT count(*) FROM batch.dead_letter_resolution) AS resolutions,
               (SELECT coalesce(jsonb_agg(jsonb_build_array(s.source_type, s.source_id)
                                          ORDER BY s.source_type, s.source_id), '[]')
                  FROM subledger.stray_transaction AS s) AS strays,
               (SELECT count(*) FROM pg_class WHERE relname LIKE 'stage\\_%%') AS stage_tables,
               (SELECT next_je_id FROM gl.je_id_allocator) AS next_je_id,
               (SELECT count(*) FROM gl.journal_entry_header) AS headers,
               (SELECT je_numbers_used FROM gl.accounting_period
                 WHERE period = %s) AS numbers_used""", (PERIOD,)).fetchone()


def test_discard_leaves_the_database_as_before_but_the_audit_chain(target, conn) -> None:
    DEFAULT.generate(target)                    # with rows dated outside the period: strays
    before = footprint(conn)
    assert before["strays"] != []
    built = draft(target)
    assert footprint(conn) != before
    proc = monthend_cli(target, "discard", str(built["batch_id"]), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"batch_id": built["batch_id"], "status": "DISCARDED"}
    assert footprint(conn) == before
    discarded = conn.execute("SELECT payload FROM audit.log WHERE event = 'DRAFT_DISCARDED'"
                             ).fetchone()["payload"]
    assert discarded["digest"] == built["digest"]
    assert monthend_cli(target, "verify").returncode == 0
    # Discarded, it is gone: neither finalized nor discarded again.
    assert monthend_cli(target, "finalize", str(built["batch_id"])).returncode == 2
    # A run of the period is now a run like any other.
    result = json.loads(monthend_cli(target, *DEFAULT.run_args(), check=True).stdout)
    assert result["status"] == "COMMITTED"


def test_a_new_draft_replaces_the_period_draft(target, conn) -> None:
    DEFAULT.generate(target)
    first = draft(target)
    second = draft(target)
    assert second["status"] == "DRAFT" and second["posted_rows"] == first["posted_rows"]

    def status(batch: dict[str, Any]) -> str | None:
        row = conn.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                           (batch["batch_id"],)).fetchone()
        return row["status"] if row else None

    # The built draft it replaced is superseded: released, its entries kept for diff.
    assert status(first) == "SUPERSEDED"
    assert conn.execute("SELECT count(*) AS n FROM batch.source_claim WHERE batch_id = %s",
                        (first["batch_id"],)).fetchone()["n"] == 0
    assert conn.execute("SELECT count(*) AS n FROM batch.draft_journal_entry_header "
                        "WHERE batch_id = %s", (first["batch_id"],)).fetchone()["n"] == \
        first["journal_entries"]
    # A third: the second is superseded, the first discarded.
    third = draft(target)
    assert (status(first), status(second), status(third)) == (None, "SUPERSEDED", "DRAFT")
    events = [(r["event"], r["batch_id"]) for r in conn.execute(
        "SELECT event, (payload ->> 'batch_id')::bigint AS batch_id FROM audit.log "
        "WHERE event IN ('DRAFT_SUPERSEDED', 'DRAFT_DISCARDED') ORDER BY seq")]
    assert events == [("DRAFT_SUPERSEDED", first["batch_id"]),
                      ("DRAFT_DISCARDED", first["batch_id"]),
                      ("DRAFT_SUPERSEDED", second["batch_id"])]
    # A superseded draft is not a batch to cancel, and the period has one draft.
    proc = monthend_cli(target, "cancel", str(second["batch_id"]))
    assert proc.returncode == 2 and "monthend discard" in proc.stderr
    proc = monthend_cli(target, "resume", str(second["batch_id"]))
    assert proc.returncode == 2 and f"draft {second['batch_id']} was superseded" in proc.stderr
    proc = monthend_cli(target, "report", "large-transactions", "--batch",
                        str(second["batch_id"]))
    assert proc.returncode == 2 and "was superseded" in proc.stderr
    result, _ = finalize(target, third["batch_id"])
    assert result["status"] == "COMMITTED"


def test_a_draft_killed_while_built_resumes_to_a_draft(target, conn,
                                                      clean_fingerprint) -> None:
    DEFAULT.generate(target)
    conn.execute(f"ALTER DATABASE {conn.info.dbname} "
                 "SET client_connection_check_interval = '100ms'")
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *DEFAULT.run_args(2, "--draft"))
        held = wait_until_held(conn, proc)
        draft_id = held[0]["batch_id"]
        kill_process(proc)
        the_gate.open()
        resumed = monthend_cli(target, "resume", str(draft_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "DRAFT"
    assert ledger_rows(conn) == (0, 0, 0)
    finalize(target, draft_id)
    assert ledger_fingerprint(conn, PERIOD) == clean_fingerprint(DEFAULT)
    check_invariants(conn, clean=clean_fingerprint(DEFAULT))


def test_server_stopped_mid_finalize_leaves_the_draft(private_cluster) -> None:
    """`pg_ctl stop -m immediate` while finalize waits inside the commit (its
    attach): after the restart the draft is there, whole, and nothing of it is
    posted; finalize then posts it."""
    target = db.Target(private_cluster.dsn(), "--dsn")
    DEFAULT.generate(target)
    built = draft(target)
    conn = connect(target.conninfo)
    try:
        stage = f"batch.stage_journal_entry_line_{built['batch_id']}"
        with hold_lock(target.conninfo, f"LOCK TABLE {stage} IN ACCESS SHARE MODE"):
            proc = start_cli(target, "finalize", str(built["batch_id"]), "--json")
            wait_for_lock_wait(conn, "%batch.finalize_draft%", proc)
            kill_process(proc)
            private_cluster.stop("immediate")
        conn.close()
        restart(private_cluster)
        conn = connect(target.conninfo)
        assert conn.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                            (built["batch_id"],)).fetchone()["status"] == "DRAFT"
        assert ledger_rows(conn) == (0, 0, 0)
        assert audit_events(conn, built["batch_id"])[-1] == "DRAFT_BUILT"
        result, _ = finalize(target, built["batch_id"])
        assert result["status"] == "COMMITTED" and result["digest"] == built["digest"]
        check_invariants(conn)
    finally:
        conn.close()


def report_json(target: db.Target, *args: str) -> dict[str, Any]:
    proc = monthend_cli(target, "report", *args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_reports_read_a_draft_as_it_will_post(target, conn) -> None:
    DEFAULT.generate(target)
    built = draft(target)
    draft_id = str(built["batch_id"])
    tb = report_json(target, "trial-balance", "--batch", draft_id)
    assert (tb["batch_id"], tb["batch_mode"], tb["batch_status"]) == (
        built["batch_id"], "DRAFT", "DRAFT")
    assert tb["ok"] is True
    kinds = {r["row_kind"] for r in tb["rows"]}
    assert kinds == {"ACCOUNT", "TOTAL", "BATCH", "CURRENCY"}
    draft_accounts = {r["account_code"]: (r["lines"], r["debit"], r["credit"])
                      for r in tb["rows"] if r["row_kind"] == "ACCOUNT"}
    large = report_json(target, "large-transactions", "--batch", draft_id)
    drafted = {(r["source_type"], r["source_id"]): r["first_je_number"]
               for r in large["rows"] if r["status"] == "DRAFT"}
    assert drafted and all(r["batch_id"] == built["batch_id"] for r in large["rows"]
                           if r["status"] == "DRAFT")
    # Without --batch the draft's rows are pending, like any unfinished batch's.
    plain = report_json(target, "large-transactions", "--period", PERIOD)
    assert {r["status"] for r in plain["rows"]} <= {"PENDING", "DEAD_LETTER"}

    finalize(target, built["batch_id"])
    posted_tb = report_json(target, "trial-balance", "--period", PERIOD)
    assert {r["account_code"]: (r["lines"], r["debit"], r["credit"])
            for r in posted_tb["rows"] if r["row_kind"] == "ACCOUNT"} == draft_accounts
    posted = report_json(target, "large-transactions", "--period", PERIOD)
    assert {(r["source_type"], r["source_id"]): r["first_je_number"]
            for r in posted["rows"] if r["status"] == "POSTED"} == drafted

    # --batch is for the reports that read entries, and for a batch of the period.
    proc = monthend_cli(target, "report", "integrity", "--batch", draft_id)
    assert proc.returncode == 2
    assert "--batch applies to large-transactions, high-value, trial-balance" in proc.stderr
    proc = monthend_cli(target, "report", "trial-balance", "--batch", draft_id,
                        "--period", "2025-02")
    assert proc.returncode == 2 and f"is of period {PERIOD}, not 2025-02" in proc.stderr


# The rule the diff test changes: a ratio line on the debit side, its entry's
# balancing line on the credit side.
RULE = ("PREMIUM", "ENDORSEMENT", 2, 2)


def test_diff_of_two_drafts_shows_what_a_rule_change_moves(target, conn) -> None:
    DEFAULT.generate(target)
    before = draft(target)
    rule = conn.execute("SELECT account_code, side, ratio FROM gl.posting_rule "
                        "WHERE (source_type, txn_type, je_seq, line_no) = (%s, %s, %s, %s)",
                        RULE).fetchone()
    balancing = conn.execute("SELECT account_code, side FROM gl.posting_rule "
                             "WHERE (source_type, txn_type, je_seq) = (%s, %s, %s) "
                             "AND ratio IS NULL", RULE[:3]).fetchone()
    assert (rule["side"], balancing["side"]) == ("D", "C")
    new_ratio = rule["ratio"] + Decimal("0.03")
    conn.execute("UPDATE gl.posting_rule SET ratio = %s "
                 "WHERE (source_type, txn_type, je_seq, line_no) = (%s, %s, %s, %s)",
                 (new_ratio, *RULE))
    after = draft(target)
    assert conn.execute("SELECT status FROM batch.run WHERE batch_id = %s",
                        (before["batch_id"],)).fetchone()["status"] == "SUPERSEDED"
    assert after["posted_rows"] == before["posted_rows"]

    # Computed here from the source rows, not through the rounding view: how
    # much more the ratio line takes, per currency, in both currencies.
    expected: dict[str, tuple[Decimal, Decimal]] = {}
    for row in conn.execute("""
            SELECT s.currency,
                   sum(round(s.amount * %(new)s, c.minor_units)
                       - round(s.amount * %(old)s, c.minor_units)) AS delta,
                   sum(round(round(s.amount * coalesce(fx.rate, 1), fc.minor_units) * %(new)s,
                             fc.minor_units)
                       - round(round(s.amount * coalesce(fx.rate, 1), fc.minor_units) * %(old)s,
                               fc.minor_units)) AS delta_f
            FROM subledger.premium_transaction AS s
            JOIN batch.source_claim AS k
              ON k.source_type = 'PREMIUM' AND k.source_id = s.txn_id AND k.batch_id = %(b)s
            JOIN gl.currency AS c ON c.code = s.currency
            CROSS JOIN gl.setting AS st
            JOIN gl.currency AS fc ON fc.code = st.functional_currency
            LEFT JOIN gl.fx_rate AS fx ON fx.period = %(p)s AND fx.currency = s.currency
            WHERE s.txn_type = %(t)s
            GROUP BY s.currency""", {"new": new_ratio, "old": rule["ratio"],
                                     "b": after["batch_id"], "p": PERIOD, "t": RULE[1]}):
        if row["delta"] or row["delta_f"]:
            expected[row["currency"]] = (row["delta"], row["delta_f"])
    assert expected

    proc = monthend_cli(target, "diff", "--draft", str(after["batch_id"]), "--against-draft",
                        str(before["batch_id"]), "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    changes = {(r["account_code"], r["currency"]): (Decimal(r["change"]),
                                                    Decimal(r["functional_change"]))
               for r in document["rows"]}
    want = {}
    for currency, (delta, delta_f) in expected.items():
        want[(rule["account_code"], currency)] = (delta, delta_f)
        want[(balancing["account_code"], currency)] = (-delta, -delta_f)
    assert changes == want
    # Largest functional change first; the totals net to zero.
    sizes = [abs(Decimal(r["functional_change"])) for r in document["rows"]]
    assert sizes == sorted(sizes, reverse=True)
    assert Decimal(document["totals"]["functional_change"]) == 0
    assert document["against"]["batch_status"] == "SUPERSEDED"

    # Against what the period posted (nothing yet): the whole draft, per account.
    proc = monthend_cli(target, "diff", "--draft", str(after["batch_id"]), "--against",
                        PERIOD, "--csv")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("account_code,account_name,currency,")
    movement = conn.execute("SELECT count(*) AS n FROM batch.batch_movement(%s) "
                            "WHERE debit <> credit OR functional_debit <> functional_credit",
                            (after["batch_id"],)).fetchone()["n"]
    assert len(lines) - 1 == movement
    # The superseded draft is not finalized, and is discarded on request.
    _, err = finalize(target, before["batch_id"], expect=2)
    assert f"draft {before['batch_id']} was superseded by a newer draft of {PERIOD}" in err
    assert monthend_cli(target, "discard", str(before["batch_id"])).returncode == 0
    assert conn.execute("SELECT count(*) AS n FROM pg_class WHERE relname = %s",
                        (f"stage_journal_entry_line_{before['batch_id']}",)).fetchone()["n"] == 0


def late_row_of_closed_january(target: db.Target, conn: psycopg.Connection) -> None:
    """January posted and closed, February generated, late_row_policy
    NEXT_OPEN_PERIOD, and one premium row (900001) arriving dated in January."""
    for period, seed in (("2025-01", "1"), ("2025-02", "2")):
        monthend_cli(target, "generate", "--period", period, "--txns", "200", "--seed", seed,
                     check=True)
    monthend_cli(target, "run", "--period", "2025-01", "--json", check=True)
    conn.execute("CALL gl.close_period('2025-01')")
    conn.execute("UPDATE gl.setting SET late_row_policy = 'NEXT_OPEN_PERIOD'")
    conn.execute("INSERT INTO subledger.premium_transaction (txn_id, policy_id, payment_date, "
                 "txn_type, line_of_business, amount, currency) VALUES "
                 "(900001, 7, '2025-01-15', 'RENEWAL', 'HOME', 100.00, 'USD')")


def test_a_draft_holds_its_late_rows_and_their_periods_closed(target, conn) -> None:
    """Late rows of a closed period (late_row_policy NEXT_OPEN_PERIOD) a draft
    claims stay frozen while it holds them, and it is not finalized once their
    period is reopened (that period's run must have them then)."""
    late_row_of_closed_january(target, conn)
    built = draft_of(target, "2025-02")
    assert conn.execute("SELECT late_periods FROM batch.run WHERE batch_id = %s",
                        (built["batch_id"],)).fetchone()["late_periods"] == ["2025-01"]
    # Moving it to another period would post it twice: refused while the draft holds it.
    with pytest.raises(psycopg.errors.ObjectInUse):
        conn.execute("UPDATE subledger.premium_transaction SET payment_date = '2025-03-05' "
                     "WHERE txn_id = 900001")

    conn.execute("CALL gl.reopen_period('2025-01', 'a late broker statement')")
    _, err = finalize(target, built["batch_id"], expect=2)
    assert (f"draft {built['batch_id']} cannot be finalized: it posts late rows of 2025-01 "
            f"which are no longer left to 2025-02: 2025-01 is OPEN") in err
    # Discarded, the draft lets the reopened period post its own row, on its date.
    assert monthend_cli(target, "discard", str(built["batch_id"])).returncode == 0
    january = json.loads(monthend_cli(target, "run", "--period", "2025-01", "--json",
                                      check=True).stdout)
    assert january["posted_rows"] == 1
    posted = conn.execute("SELECT count(*) AS n, min(je_date) AS je_date, "
                          "min(source_date) AS source_date FROM gl.journal_entry_header "
                          "WHERE source_id = 900001 AND source_type = 'PREMIUM'").fetchone()
    assert (posted["n"], str(posted["je_date"]), posted["source_date"]) == (3, "2025-01-15",
                                                                             None)


def test_a_draft_with_late_rows_finalizes_as_their_posting(target, conn) -> None:
    late_row_of_closed_january(target, conn)
    built = draft_of(target, "2025-02")
    result, _ = finalize(target, built["batch_id"])
    assert result["digest"] == built["digest"]
    late = conn.execute("SELECT count(*) AS n, min(je_date) AS je_date, "
                        "min(source_date) AS source_date FROM gl.journal_entry_header "
                        "WHERE source_id = 900001 AND source_type = 'PREMIUM'").fetchone()
    assert (late["n"], str(late["je_date"]), str(late["source_date"])) == (
        3, "2025-02-01", "2025-01-15")
    assert monthend_cli(target, "verify").returncode == 0
