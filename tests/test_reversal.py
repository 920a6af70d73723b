"""Corrections by reversal: a committed run mirrored entry for entry by a REVERSAL
batch (by side or by sign, whole or for some source rows), the refusals that write
nothing, the keys that keep one live posting a source row, the re-post after a
corrected rule, and verification that knows reversals."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from conftest import monthend_cli
from faults import check_invariants, fresh_database

pytestmark = pytest.mark.full

PERIOD = "2025-01"


def generate(target, txns: int = 300, seed: int = 3, bad: str = "0.02",
             period: str = PERIOD) -> None:
    monthend_cli(target, "generate", "--period", period, "--txns", str(txns), "--seed",
                 str(seed), "--bad-rows", bad, check=True)


def run(target, period: str = PERIOD) -> dict:
    proc = monthend_cli(target, "run", "--period", period, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def reverse(target, batch_id: int, *extra: str, expect: int = 0) -> dict:
    proc = monthend_cli(target, "reverse", str(batch_id), *extra, "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    document["stderr"] = proc.stderr
    return document


def account_balances(conn, batch_ids: list[int]) -> dict:
    """Per account and currency: the net of debits less credits in transaction and
    functional currency, over the batches given."""
    rows = conn.execute("""
        SELECT l.account_code, h.currency, sum(l.debit - l.credit) AS net,
               sum(l.functional_debit - l.functional_credit) AS net_f, count(*) AS lines
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h USING (je_id, je_date, batch_id)
        WHERE l.batch_id = ANY(%s)
        GROUP BY 1, 2 ORDER BY 1, 2""", (batch_ids,)).fetchall()
    return {(r["account_code"], r["currency"]): (r["net"], r["net_f"], r["lines"]) for r in rows}


def mirrored_pairs(conn, reversal: int) -> list[dict]:
    """Each reversing line beside the line it mirrors."""
    return conn.execute("""
        SELECT r.je_id, r.line_no, r.account_code, o.account_code AS o_account,
               r.debit, r.credit, r.functional_debit, r.functional_credit,
               o.debit AS o_debit, o.credit AS o_credit,
               o.functional_debit AS o_fd, o.functional_credit AS o_fc,
               rh.je_date, oh.je_date AS o_date, rh.description, oh.je_number AS o_number
        FROM gl.journal_entry_header AS rh
        JOIN gl.journal_entry_line AS r USING (je_id, je_date, batch_id)
        JOIN gl.journal_entry_header AS oh ON oh.je_id = rh.reverses_je_id
        JOIN gl.journal_entry_line AS o
          ON o.je_id = oh.je_id AND o.je_date = oh.je_date AND o.batch_id = oh.batch_id
         AND o.line_no = r.line_no
        WHERE rh.batch_id = %s""", (reversal,)).fetchall()


@pytest.mark.parametrize("method", ["side", "sign"])
def test_reversal_mirrors_every_line_and_nets_each_account_to_zero(target, conn,
                                                                   method: str) -> None:
    generate(target)
    original = run(target)
    before = account_balances(conn, [original["batch_id"]])
    assert any(net != 0 for net, _f, _n in before.values())

    result = reverse(target, original["batch_id"], "--reason", "RULE_ERROR", "--note",
                     "rule 4100 ratio", "--method", method)
    assert (result["status"], result["kind"], result["reverses_batch_id"]) == \
        ("COMMITTED", "REVERSAL", original["batch_id"])
    assert result["journal_entries"] == original["journal_entries"]
    assert result["journal_lines"] == original["journal_lines"]
    # Numbers continue the period's sequence.
    assert result["je_numbers"] == [original["je_numbers"][1] + 1,
                                    2 * original["je_numbers"][1]]

    pairs = mirrored_pairs(conn, result["batch_id"])
    assert len(pairs) == original["journal_lines"]
    for p in pairs:
        assert p["account_code"] == p["o_account"] and p["je_date"] == p["o_date"]
        assert p["description"].startswith(f"Reversal of {p['o_number']}: ")
        if method == "side":
            assert (p["debit"], p["credit"], p["functional_debit"], p["functional_credit"]) \
                == (p["o_credit"], p["o_debit"], p["o_fc"], p["o_fd"])
        else:
            assert (p["debit"], p["credit"], p["functional_debit"], p["functional_credit"]) \
                == (-p["o_debit"], -p["o_credit"], -p["o_fd"], -p["o_fc"])

    # Trial balance of the original plus its reversal: zero per account and
    # currency, in both currencies.
    both = account_balances(conn, [original["batch_id"], result["batch_id"]])
    assert set(both) == set(before)
    assert all((net, net_f) == (0, 0) for net, net_f, _n in both.values())
    assert monthend_cli(target, "verify").returncode == 0
    check_invariants(conn)


def test_a_sign_reversal_partition_refuses_a_positive_line(target, conn) -> None:
    generate(target, txns=60)
    original = run(target)
    result = reverse(target, original["batch_id"], "--reason", "OTHER", "--method", "sign")
    partition = f"gl.journal_entry_line_{PERIOD.replace('-', '_')}_b{result['batch_id']}"
    checks = {r["conname"]: r["def"] for r in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c'", (partition,)).fetchall()}
    assert "debit <= " in checks[f"journal_entry_line_{result['batch_id']}_sign_check"]
    conn.execute("SET session_replication_role = replica")  # past the ledger's triggers
    with pytest.raises(errors.CheckViolation, match="sign_check"):
        conn.execute(f"INSERT INTO {partition} SELECT je_id, je_date, 99, account_code, 1, 0, "
                     f"0, 0, batch_id FROM {partition} LIMIT 1")


def write_ids(tmp_path: Path, rows: list[tuple[str, int]], header: bool = True) -> Path:
    path = tmp_path / "ids.csv"
    lines = (["source_type,source_id"] if header else []) + [f"{t},{i}" for t, i in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_source_ids_reverse_only_those_rows_and_they_post_again(target, conn,
                                                                tmp_path: Path) -> None:
    generate(target)
    original = run(target)
    chosen = conn.execute("SELECT source_type, source_id FROM batch.source_claim "
                          "WHERE batch_id = %s ORDER BY source_type, source_id LIMIT 3",
                          (original["batch_id"],)).fetchall()
    ids = write_ids(tmp_path, [(r["source_type"], r["source_id"]) for r in chosen])
    result = reverse(target, original["batch_id"], "--reason", "SOURCE_ERROR",
                     "--source-ids", str(ids))
    reversed_rows = conn.execute(
        "SELECT DISTINCT source_type, source_id FROM gl.journal_entry_header "
        "WHERE batch_id = %s ORDER BY 1, 2", (result["batch_id"],)).fetchall()
    assert reversed_rows == chosen
    assert result["journal_entries"] == 3 * len(chosen)

    # The three rows are unposted again: the next run posts exactly them, anew.
    again = run(target)
    assert again["posted_rows"] == len(chosen)
    reposted = conn.execute(
        "SELECT DISTINCT source_type, source_id FROM gl.journal_entry_header "
        "WHERE batch_id = %s ORDER BY 1, 2", (again["batch_id"],)).fetchall()
    assert reposted == chosen
    generations = conn.execute("SELECT generation, count(*) AS n FROM batch.source_claim "
                               "GROUP BY 1 ORDER BY 1").fetchall()
    assert [(g["generation"], g["n"]) for g in generations] == \
        [(0, original["posted_rows"]), (1, len(chosen))]
    # The rest of the batch can still be reversed; the chosen rows' first
    # postings are not reversed twice.
    rest = reverse(target, original["batch_id"], "--reason", "OTHER")
    assert rest["posted_rows"] == original["posted_rows"] - len(chosen)
    assert monthend_cli(target, "verify").returncode == 0
    check_invariants(conn)


def counts(conn) -> dict:
    return conn.execute(
        "SELECT (SELECT count(*) FROM batch.run) AS batches, "
        "(SELECT count(*) FROM batch.source_reversal) AS reversals, "
        "(SELECT count(*) FROM gl.journal_entry_header) AS headers, "
        "(SELECT max(seq) FROM audit.log) AS audit_seq").fetchone()


@pytest.mark.parametrize(("args", "message"), [
    (("--reason", "TYPO"), "reversal reason 'TYPO' is not known"),
    (("--reason", "RULE_ERROR", "--period", "2024-12"),
     "period 2024-12 is before period 2025-01 of batch"),
    (("--reason", "RULE_ERROR", "--period", "2025-07"), "period 2025-07 is not defined"),
])
def test_refused_reversals_exit_2_and_write_nothing(target, conn, args, message) -> None:
    generate(target, txns=40)
    original = run(target)
    before = counts(conn)
    refused = reverse(target, original["batch_id"], *args, expect=2)
    assert message in refused["stderr"], refused["stderr"]
    assert counts(conn) == before


def test_a_reversal_is_not_reversed_and_a_posting_not_twice(target, conn,
                                                            tmp_path: Path) -> None:
    generate(target, txns=40)
    original = run(target)
    first = reverse(target, original["batch_id"], "--reason", "DUPLICATE")
    before = counts(conn)
    again = reverse(target, first["batch_id"], "--reason", "OTHER", expect=2)
    assert f"batch {first['batch_id']} is a reversal (of batch {original['batch_id']})" \
        in again["stderr"]
    twice = reverse(target, original["batch_id"], "--reason", "OTHER", expect=2)
    assert f"batch {original['batch_id']} has no posting left to reverse" in twice["stderr"]
    row = conn.execute("SELECT source_type, source_id FROM batch.source_claim LIMIT 1"
                       ).fetchone()
    ids = write_ids(tmp_path, [(row["source_type"], row["source_id"]), ("CLAIM", 99999999)],
                    header=False)
    missing = reverse(target, original["batch_id"], "--reason", "OTHER", "--source-ids",
                      str(ids), expect=2)
    assert "1 of the given source rows are not posted by batch" in missing["stderr"]
    assert "CLAIM 99999999" in missing["stderr"]
    assert counts(conn) == before
    # The database refuses a second reversal of one posting whatever the caller.
    with pytest.raises(errors.UniqueViolation, match="source_reversal_pkey"):
        conn.execute("INSERT INTO batch.source_reversal SELECT period, source_type, source_id, "
                     "generation, %s, 0, original_je_id, je_count FROM batch.source_reversal "
                     "LIMIT 1", (first["batch_id"],))


def test_bad_source_ids_file_is_refused_naming_the_line(target, tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("source_type,source_id\nPREMIUM,12\npremium,x\n")
    proc = monthend_cli(target, "reverse", "1", "--reason", "OTHER", "--source-ids", str(path))
    assert proc.returncode == 2
    assert f"{path}:3: 'premium,x' is not a source row" in proc.stderr


def test_a_second_posting_needs_a_committed_reversal(target, conn) -> None:
    """The generation key: posting a row again without reversing it is refused by
    the database, and so is taking a reversal back once the row is posted again."""
    generate(target, txns=40)
    original = run(target)
    claim = conn.execute("SELECT * FROM batch.source_claim LIMIT 1").fetchone()
    with pytest.raises(errors.ForeignKeyViolation, match="its posting of generation 0 is "
                                                          "not reversed"):
        conn.execute("INSERT INTO batch.source_claim (period, source_type, source_id, "
                     "generation, batch_id, je_offset) VALUES (%s, %s, %s, 1, %s, 0)",
                     (claim["period"], claim["source_type"], claim["source_id"],
                      original["batch_id"]))
    reverse(target, original["batch_id"], "--reason", "OTHER")
    run(target)
    with pytest.raises(errors.ForeignKeyViolation, match="was posted again after reversal"):
        conn.execute("DELETE FROM batch.source_reversal WHERE source_id = %s",
                     (claim["source_id"],))


def test_an_empty_selection_is_refused(target, conn) -> None:
    generate(target, txns=20, bad="0")
    original = run(target)
    with pytest.raises(errors.InvalidParameterValue, match="no source rows were given"):
        conn.execute("CALL batch.start_reversal(%s, 'OTHER', NULL, 'side', NULL, '{}', '{}', "
                     "1, 100, 1, NULL)", (original["batch_id"],))


def test_reversing_a_closed_period_into_the_next(target, conn) -> None:
    """The rows of a closed period, reversed into the next one, cannot be posted
    again there: the next pre-flight dead-letters them PERIOD_CLOSED, so none is
    left neither posted nor dead-lettered. While the reversal runs, the reversed
    period is not closed."""
    generate(target, txns=40, bad="0")
    original = run(target)
    conn.execute("CALL gl.close_period(%s, false, 'month-end')", (PERIOD,))
    generate(target, txns=10, bad="0", period="2025-02")
    result = reverse(target, original["batch_id"], "--reason", "DUPLICATE", "--period",
                     "2025-02")
    assert result["status"] == "COMMITTED"
    nxt = run(target, "2025-02")
    dead = conn.execute("SELECT reason_code, count(*) AS n FROM batch.dead_letter "
                        "WHERE batch_id = %s GROUP BY 1", (nxt["batch_id"],)).fetchall()
    assert [(d["reason_code"], d["n"]) for d in dead] == \
        [("PERIOD_CLOSED", original["posted_rows"])]
    assert monthend_cli(target, "verify").returncode == 0


def test_a_period_is_not_closed_under_a_reversal_of_it(target, conn) -> None:
    generate(target, txns=20, bad="0")
    original = run(target)
    generate(target, txns=5, bad="0", period="2025-02")
    conn.execute("CALL batch.start_reversal(%s, 'OTHER', NULL, 'side', '2025-02', NULL, NULL, "
                 "1, 100, 1, NULL)", (original["batch_id"],))
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="no_active_batch"):
        conn.execute("CALL gl.close_period(%s, false, 'month-end')", (PERIOD,))


def test_a_reversed_row_may_be_corrected_upstream(target, conn, tmp_path: Path) -> None:
    """A posted row is frozen; once its posting is reversed, upstream may correct it
    (or remove a duplicate), and the next run posts what the row now says."""
    generate(target, txns=40, bad="0")
    original = run(target)
    row = conn.execute("SELECT c.source_id FROM batch.source_claim AS c "
                       "WHERE c.source_type = 'CLAIM' ORDER BY c.source_id LIMIT 1").fetchone()
    fix = "UPDATE subledger.claims_transaction SET amount = 123.45 WHERE claim_id = %s"
    with pytest.raises(errors.ObjectInUse, match="monthend reverse"):
        conn.execute(fix, (row["source_id"],))
    ids = write_ids(tmp_path, [("CLAIM", row["source_id"])])
    reverse(target, original["batch_id"], "--reason", "SOURCE_ERROR", "--source-ids", str(ids))
    conn.execute(fix, (row["source_id"],))
    again = run(target)
    assert again["posted_rows"] == 1
    amounts = conn.execute("SELECT DISTINCT source_amount FROM gl.journal_entry_header "
                           "WHERE batch_id = %s", (again["batch_id"],)).fetchall()
    assert [a["source_amount"] for a in amounts] == [Decimal("123.45")]
    check_invariants(conn)


def test_two_reversals_of_one_batch_at_once(target, conn) -> None:
    """The second start waits for the first's row, then is refused naming it."""
    generate(target, txns=40)
    original = run(target)
    with psycopg.connect(target.conninfo) as first:
        first.execute("CALL batch.start_reversal(%s, 'OTHER', NULL, 'side', NULL, NULL, NULL, "
                      "1, 100, 1, NULL)", (original["batch_id"],))
        pending = first.execute("SELECT max(batch_id) FROM batch.run").fetchone()[0]
        first.commit()
        second = reverse(target, original["batch_id"], "--reason", "OTHER", expect=2)
        assert (f"batch {original['batch_id']} is being reversed by batch {pending}"
                in second["stderr"])
        assert f"monthend resume {pending}" in second["stderr"]


def rule_lines(conn, batch_id: int) -> list[tuple]:
    return [tuple(r.values()) for r in conn.execute("""
        SELECT h.source_type, h.source_id, h.je_seq, l.line_no, l.account_code, l.debit,
               l.credit, l.functional_debit, l.functional_credit, h.je_date, h.currency
        FROM gl.journal_entry_header AS h
        JOIN gl.journal_entry_line AS l USING (je_id, je_date, batch_id)
        WHERE h.batch_id = %s ORDER BY 1, 2, 3, 4""", (batch_id,)).fetchall()]


# The broker's commission on premium was booked at 15%; it is 12%.
CORRECTED_RULE = ("UPDATE gl.posting_rule SET ratio = 0.12 "
                  "WHERE source_type = 'PREMIUM' AND account_code = '5200' AND ratio = 0.15")


def test_repost_after_reversal_equals_a_clean_run_of_the_corrected_rule(
        target, conn, postgresql_noproc) -> None:
    generate(target, txns=200, bad="0")
    wrong = run(target)
    conn.execute(CORRECTED_RULE)
    reverse(target, wrong["batch_id"], "--reason", "RULE_ERROR")
    repost = run(target)
    assert repost["posted_rows"] == wrong["posted_rows"]
    reposted = rule_lines(conn, repost["batch_id"])
    assert reposted != rule_lines(conn, wrong["batch_id"])

    with fresh_database(postgresql_noproc) as clean_target, \
            psycopg.connect(clean_target.conninfo, autocommit=True,
                            row_factory=dict_row) as clean:
        clean.execute(CORRECTED_RULE)
        generate(clean_target, txns=200, bad="0")
        clean_run = run(clean_target)
        assert rule_lines(clean, clean_run["batch_id"]) == reposted


def test_cross_period_reversal_is_dated_on_the_first_day(target, conn) -> None:
    generate(target, txns=40)
    original = run(target)
    generate(target, txns=10, period="2025-02")
    result = reverse(target, original["batch_id"], "--reason", "OTHER", "--period", "2025-02")
    dates = conn.execute("SELECT DISTINCT je_date, period FROM gl.journal_entry_header "
                         "WHERE batch_id = %s", (result["batch_id"],)).fetchall()
    assert [(d["je_date"].isoformat(), d["period"]) for d in dates] == \
        [("2025-02-01", "2025-02")]
    numbers = conn.execute("SELECT min(je_number) AS lo, max(je_number) AS hi "
                           "FROM gl.journal_entry_header WHERE batch_id = %s",
                           (result["batch_id"],)).fetchone()
    assert (numbers["lo"], numbers["hi"]) == \
        ("2025-02-0000000001", f"2025-02-{original['journal_entries']:010d}")


def test_reversal_register_lists_each_reversing_entry(target, conn) -> None:
    generate(target, txns=30, bad="0")
    original = run(target)
    result = reverse(target, original["batch_id"], "--reason", "FX_RATE_ERROR", "--note",
                     "EUR rate", "--method", "sign")
    proc = monthend_cli(target, "report", "reversals", "--period", PERIOD, "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    rows = document["rows"]
    assert len(rows) == original["journal_entries"]
    assert {(r["reason"], r["note"], r["method"], r["reversal_batch_id"],
             r["original_batch_id"]) for r in rows} == \
        {("FX_RATE_ERROR", "EUR rate", "sign", result["batch_id"], original["batch_id"])}
    for r in rows:
        assert Decimal(r["debit"]) == Decimal(r["credit"]) < 0
    expected = conn.execute("SELECT count(*) AS n FROM gl.journal_entry_header "
                            "WHERE reverses_je_id IS NOT NULL").fetchone()["n"]
    assert document["summary"]["entries"] == expected


def tamper(conn, statement: str, *params) -> None:
    conn.execute("SET session_replication_role = replica")
    conn.execute(statement, params)
    conn.execute("RESET session_replication_role")


@pytest.mark.parametrize("method", ["side", "sign"])
def test_verify_batch_catches_a_changed_reversal_line_and_a_moved_link(target, conn,
                                                                      method: str) -> None:
    generate(target, txns=40, bad="0")
    original = run(target)
    result = reverse(target, original["batch_id"], "--reason", "OTHER", "--method", method)
    assert conn.execute("SELECT * FROM audit.verify_batch(%s)",
                        (result["batch_id"],)).fetchall() == []
    line = conn.execute("SELECT l.je_id, l.line_no, h.je_number FROM gl.journal_entry_line l "
                        "JOIN gl.journal_entry_header h USING (je_id, je_date, batch_id) "
                        "WHERE l.batch_id = %s AND l.debit <> 0 ORDER BY l.je_id, l.line_no "
                        "LIMIT 1", (result["batch_id"],)).fetchone()
    tamper(conn, "UPDATE gl.journal_entry_line SET debit = debit * 2 "
                 "WHERE je_id = %s AND line_no = %s", line["je_id"], line["line_no"])
    problems = conn.execute("SELECT * FROM audit.verify_batch(%s)",
                            (result["batch_id"],)).fetchall()
    assert {p["problem"] for p in problems} >= {"RANGE_DIGEST_MISMATCH", "LINE_NOT_MIRRORED"}
    assert [p["je_number"] for p in problems if p["problem"] == "LINE_NOT_MIRRORED"] == \
        [line["je_number"]]

    header = conn.execute("SELECT je_id, reverses_je_id, je_number FROM "
                          "gl.journal_entry_header WHERE batch_id = %s ORDER BY je_id "
                          "OFFSET 5 LIMIT 1", (result["batch_id"],)).fetchone()
    tamper(conn, "UPDATE gl.journal_entry_header SET reverses_je_id = reverses_je_id + 1 "
                 "WHERE je_id = %s", header["je_id"])
    problems = conn.execute("SELECT * FROM audit.verify_batch(%s)",
                            (result["batch_id"],)).fetchall()
    moved = [p for p in problems if p["problem"] == "REVERSAL_LINK_DIFFERS"]
    assert [p["je_number"] for p in moved] == [header["je_number"]]
    assert f"names je_id {header['reverses_je_id'] + 1}" in moved[0]["detail"]
    # The ledger as a whole: the entry the link left is live again, the one it
    # points at is named twice.
    ledger = conn.execute("SELECT problem, detail FROM audit.verify_ledger()").fetchall()
    assert {p["problem"] for p in ledger} == {"SOURCE_POSTED_TWICE"}
    assert all("live)" in p["detail"] for p in ledger)
