"""Tampering with a committed run is caught, and located, by the verification
functions run as the auditor role.

Each test commits a real small run through the CLI, then tampers as the
superuser, bypassing the guards the way only a superuser can
(``session_replication_role = replica`` turns the refusing triggers off), and
checks that audit.verify_batch / verify_ledger / verify_chain / verify_kept_head
report it precisely: the right range, journal entry (je_number) or audit row.
A chain rewritten consistently from genesis passes every check but the one
against a head kept outside the database; that is what --head-file is for.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit_helpers import AUDITOR, auditor, role_target, sealing_by, tamper
from conftest import monthend_cli
from monthend import db

# Every test posts a batch through the CLI first: the full tier.
pytestmark = pytest.mark.full

PERIOD = "2025-01"
# The range tampered with, one of about eighteen (the last four of six cut in
# four): at most the twenty verify_batch examines entry by entry.
RANGE = 3


# --------------------------------------------------------------------------- helpers


def verify_batch(target: db.Target, batch_id: int) -> list[dict[str, Any]]:
    with auditor(target) as session:
        return session.execute("SELECT * FROM audit.verify_batch(%s)", (batch_id,)).fetchall()


def verify_ledger(target: db.Target) -> list[dict[str, Any]]:
    with auditor(target) as session:
        return session.execute("SELECT * FROM audit.verify_ledger()").fetchall()


def verify_chain(target: db.Target) -> list[dict[str, Any]]:
    with auditor(target) as session:
        return session.execute("SELECT * FROM audit.verify_chain()").fetchall()


def verify_kept_head(target: db.Target, head: dict[str, Any]) -> list[dict[str, Any]]:
    with auditor(target) as session:
        return session.execute("SELECT * FROM audit.verify_kept_head(%s, %s)",
                               (head["seq"], head["hash"])).fetchall()


def head(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT seq, hash FROM audit.head()").fetchone()
    assert row is not None
    return row


def problems(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """(range_no, problem, je_number) of verify_batch rows."""
    return {(r["range_no"], r["problem"], r["je_number"]) for r in rows}


def verify_cli(target: db.Target, *args: str) -> tuple[int, dict[str, Any]]:
    proc = monthend_cli(role_target(target, AUDITOR), "verify", "--json", *args)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(params=[1, 2], ids=["seal-v1", "seal-v2"])
def batch(request: pytest.FixtureRequest, target: db.Target,
          conn: psycopg.Connection) -> dict[str, Any]:
    """One committed batch of 2000 source rows in ranges of 400, sealed by each
    seal version in turn (a version 1 batch is one made before version 2: the
    column's default stands in for the release that made it); its run row and
    ranges."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "2000", "--seed", "5",
                 check=True)
    with sealing_by(conn, request.param):
        proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2",
                            "--range-size", "400", "--json", check=True)
    batch_id = json.loads(proc.stdout)["batch_id"]
    run = conn.execute("SELECT * FROM batch.run WHERE batch_id = %s", (batch_id,)).fetchone()
    assert run is not None and run["status"] == "COMMITTED" and run["range_count"] > RANGE
    assert run["seal_version"] == request.param
    ranges = conn.execute("""
        SELECT rg.range_no, %(base)s + rg.je_offset AS lo_je_id,
               %(base)s + rg.je_offset + rg.je_count - 1 AS hi_je_id
        FROM batch.range AS rg WHERE rg.batch_id = %(b)s ORDER BY rg.range_no""",
                          {"base": run["je_id_base"], "b": batch_id}).fetchall()
    return {"batch_id": batch_id, "run": run, "ranges": {r["range_no"]: r for r in ranges}}


def entry_in(conn: psycopg.Connection, batch: dict[str, Any], range_no: int = RANGE,
             offset: int = 17) -> dict[str, Any]:
    """A header of the range, with its lines."""
    je_id = batch["ranges"][range_no]["lo_je_id"] + offset
    header = conn.execute("SELECT * FROM gl.journal_entry_header WHERE je_id = %s",
                          (je_id,)).fetchone()
    assert header is not None
    header["lines"] = conn.execute(
        "SELECT * FROM gl.journal_entry_line WHERE je_id = %s ORDER BY line_no",
        (je_id,)).fetchall()
    assert len(header["lines"]) == 3
    return header


# --------------------------------------------------------------------------- clean


def test_clean_database_verifies_as_the_auditor(batch: dict[str, Any], target: db.Target,
                                                conn: psycopg.Connection,
                                                tmp_path: Path) -> None:
    kept = head(conn)
    assert verify_chain(target) == []
    assert verify_batch(target, batch["batch_id"]) == []
    assert verify_ledger(target) == []
    assert verify_kept_head(target, kept) == []

    head_file = tmp_path / "head.json"
    code, result = verify_cli(target, "--head-file", str(head_file))
    assert code == 0, result
    assert result["ok"] is True
    assert result["problem_counts"] == {"chain": 0, "ledger": 0, "batch": 0, "period": 0,
                                        "kept_head": 0, "archive": 0}
    assert result["batches_verified"] == [batch["batch_id"]]
    assert result["head"]["seq"] == kept["seq"]
    # The file keeps the head the checks verified.
    assert json.loads(head_file.read_text())["seq"] == kept["seq"]
    assert json.loads(head_file.read_text())["hash"] == kept["hash"]
    # The run is recorded after the read-only checks, in the chain, by the auditor.
    event = conn.execute("SELECT * FROM audit.log ORDER BY seq DESC LIMIT 1").fetchone()
    assert event["seq"] == result["recorded_seq"] == kept["seq"] + 1
    assert event["event"] == "VERIFICATION_RUN"
    assert event["actor"] == conn.info.user
    assert event["payload"]["ok"] is True
    assert event["payload"]["head"] == {"seq": kept["seq"], "hash": kept["hash"]}
    assert event["payload"]["batches_verified"] == [batch["batch_id"]]
    assert verify_chain(target) == []

    # The next run checks the kept head, then keeps the newer one.
    code, result = verify_cli(target, "--head-file", str(head_file))
    assert code == 0, result
    assert result["kept_head"] == {"seq": kept["seq"], "hash": kept["hash"]}
    assert result["head_file"] == {"path": str(head_file), "existed": True, "updated": True}
    assert json.loads(head_file.read_text())["seq"] == kept["seq"] + 1


def test_verify_text_output_and_exit_codes(batch: dict[str, Any], target: db.Target,
                                           conn: psycopg.Connection, tmp_path: Path) -> None:
    proc = monthend_cli(role_target(target, AUDITOR), "verify", "--no-record")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(
        "OK: chain, ledger, 1 batch seal(s) and 0 period seal(s) verified")
    assert conn.execute("SELECT count(*) AS n FROM audit.log WHERE event = 'VERIFICATION_RUN'"
                        ).fetchone()["n"] == 0

    entry = entry_in(conn, batch)
    tamper(conn, "UPDATE gl.journal_entry_line SET credit = credit + 1, "
                 "functional_credit = functional_credit + 1 "
                 "WHERE je_id = %(je_id)s AND line_no = 3", params={"je_id": entry["je_id"]})
    proc = monthend_cli(role_target(target, AUDITOR), "verify", "--batch",
                        str(batch["batch_id"]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"batch {batch['batch_id']} range {RANGE} {entry['je_number']}: LINE_DIFFERS: " \
           "line 3: credit" in proc.stdout
    assert "PROBLEMS FOUND" in proc.stdout.splitlines()[-2]

    bad = tmp_path / "head.json"
    bad.write_text("not a head")
    proc = monthend_cli(role_target(target, AUDITOR), "verify", "--head-file", str(bad))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not a kept head" in proc.stderr


# --------------------------------------------------------------------------- the ledger


def test_changed_line_amount(batch: dict[str, Any], target: db.Target,
                             conn: psycopg.Connection) -> None:
    entry = entry_in(conn, batch)
    line = next(x for x in entry["lines"] if x["debit"] > 0)
    tamper(conn, "UPDATE gl.journal_entry_line SET debit = debit + 0.01 "
                 "WHERE je_id = %(je_id)s AND line_no = %(line_no)s",
           params={"je_id": entry["je_id"], "line_no": line["line_no"]})
    rows = verify_batch(target, batch["batch_id"])
    assert problems(rows) == {(RANGE, "RANGE_DIGEST_MISMATCH", None),
                              (RANGE, "ENTRY_UNBALANCED", entry["je_number"]),
                              (RANGE, "LINE_DIFFERS", entry["je_number"])}
    differs = next(r for r in rows if r["problem"] == "LINE_DIFFERS")
    assert differs["je_id"] == entry["je_id"]
    assert differs["detail"] == (f"line {line['line_no']}: debit {line['debit'] + Decimal('0.01')}"
                                 f", sealed {line['debit']}")

    code, result = verify_cli(target)
    assert code == 1
    assert result["ok"] is False
    assert result["batches_with_problems"] == [batch["batch_id"]]
    assert result["problem_counts"]["batch"] == 3
    event = conn.execute("SELECT payload FROM audit.log ORDER BY seq DESC LIMIT 1").fetchone()
    assert event["payload"]["ok"] is False
    assert event["payload"]["problems"]["batch"] == 3


def test_deleted_line(batch: dict[str, Any], target: db.Target,
                      conn: psycopg.Connection) -> None:
    entry = entry_in(conn, batch, offset=40)
    tamper(conn, "DELETE FROM gl.journal_entry_line WHERE je_id = %(je_id)s AND line_no = 2",
           params={"je_id": entry["je_id"]})
    rows = verify_batch(target, batch["batch_id"])
    found = problems(rows)
    assert {(RANGE, "RANGE_DIGEST_MISMATCH", None), (RANGE, "RANGE_COUNT_MISMATCH", None),
            (RANGE, "LINE_MISSING", entry["je_number"]),
            (RANGE, "LINE_COUNT_MISMATCH", entry["je_number"])} <= found
    assert found - {(RANGE, "ENTRY_UNBALANCED", entry["je_number"])} == {
        (RANGE, "RANGE_DIGEST_MISMATCH", None), (RANGE, "RANGE_COUNT_MISMATCH", None),
        (RANGE, "LINE_MISSING", entry["je_number"]),
        (RANGE, "LINE_COUNT_MISMATCH", entry["je_number"])}
    missing = next(r for r in rows if r["problem"] == "LINE_MISSING")
    assert missing["detail"].startswith(
        f"sealed line 2 (account {entry['lines'][1]['account_code']}, ")
    count = next(r for r in rows if r["problem"] == "RANGE_COUNT_MISMATCH")
    recorded = conn.execute("SELECT je_count, line_count FROM batch.range "
                            "WHERE batch_id = %s AND range_no = %s",
                            (batch["batch_id"], RANGE)).fetchone()
    assert (f"{recorded['je_count']} headers and {recorded['line_count'] - 1} lines in the "
            f"ledger, the range recorded {recorded['je_count']} and {recorded['line_count']}"
            in count["detail"])
    # The ledger as a whole: the batch holds one line fewer than batch.run says.
    assert [(r["batch_id"], r["problem"]) for r in verify_ledger(target)] == [
        (batch["batch_id"], "BATCH_ROWS_MISMATCH")]


def test_forged_entry(batch: dict[str, Any], target: db.Target,
                      conn: psycopg.Connection) -> None:
    """A balanced entry added after the batch's block, numbered next in the period, copying
    a real entry's source: outside every range, beyond the numbers used, posted twice."""
    run = batch["run"]
    copied = entry_in(conn, batch, offset=3)
    je_id = run["je_id_base"] + run["je_count"]
    je_number = f"{PERIOD}-{run['je_number_base'] + run['je_count'] + 1:010d}"
    params = {"je_id": je_id, "je_number": je_number, "from": copied["je_id"]}
    tamper(conn,
           """INSERT INTO gl.journal_entry_header
              SELECT %(je_id)s, %(je_number)s, je_date, period, batch_id, source_type, source_id,
                     je_seq, currency, fx_rate, description, source_amount
              FROM gl.journal_entry_header WHERE je_id = %(from)s""",
           """INSERT INTO gl.journal_entry_line
              SELECT %(je_id)s, je_date, line_no, account_code, debit, credit, functional_debit,
                     functional_credit, batch_id
              FROM gl.journal_entry_line WHERE je_id = %(from)s""",
           params=params)
    rows = verify_batch(target, batch["batch_id"])
    assert [(r["range_no"], r["problem"], r["je_id"], r["je_number"]) for r in rows] == [
        (None, "ROWS_OUTSIDE_RANGES", je_id, je_number)]
    assert "1 header(s) and 3 line(s)" in rows[0]["detail"]

    ledger = verify_ledger(target)
    assert {(r["period"], r["batch_id"], r["problem"], r["je_number"]) for r in ledger} == {
        (PERIOD, batch["batch_id"], "SOURCE_POSTED_TWICE", je_number),
        (PERIOD, batch["batch_id"], "NUMBER_BEYOND_USED", je_number),
        (PERIOD, batch["batch_id"], "BATCH_ROWS_MISMATCH", None)}
    twice = next(r for r in ledger if r["problem"] == "SOURCE_POSTED_TWICE")
    assert f"{copied['source_type']} {copied['source_id']} entry {copied['je_seq']}" \
           in twice["detail"]
    assert copied["je_number"] in twice["detail"]


def test_changed_account(batch: dict[str, Any], target: db.Target,
                         conn: psycopg.Connection) -> None:
    entry = entry_in(conn, batch, offset=100)
    line = entry["lines"][0]
    forged_account = "3000" if line["account_code"] != "3000" else "1000"
    tamper(conn, "UPDATE gl.journal_entry_line SET account_code = %(a)s "
                 "WHERE je_id = %(je_id)s AND line_no = 1",
           params={"a": forged_account, "je_id": entry["je_id"]})
    rows = verify_batch(target, batch["batch_id"])
    assert problems(rows) == {(RANGE, "RANGE_DIGEST_MISMATCH", None),
                              (RANGE, "LINE_NOT_IN_TEMPLATE", entry["je_number"]),
                              (RANGE, "LINE_DIFFERS", entry["je_number"])}
    differs = next(r for r in rows if r["problem"] == "LINE_DIFFERS")
    assert differs["detail"] == f"line 1: account {forged_account}, sealed {line['account_code']}"


def test_changed_header_date(batch: dict[str, Any], target: db.Target,
                             conn: psycopg.Connection) -> None:
    entry = entry_in(conn, batch, offset=5)
    day = 2 if entry["je_date"].day != 2 else 3
    new_date = entry["je_date"].replace(day=day)
    tamper(conn, "UPDATE gl.journal_entry_header SET je_date = %(d)s WHERE je_id = %(je_id)s",
           params={"d": new_date, "je_id": entry["je_id"]})
    rows = verify_batch(target, batch["batch_id"])
    # Its lines keep the old date: the entry's rows disagree, too.
    assert problems(rows) == {(RANGE, "RANGE_DIGEST_MISMATCH", None),
                              (RANGE, "LINE_DATE_MISMATCH", None),
                              (RANGE, "LINE_DATE_MISMATCH", entry["je_number"]),
                              (RANGE, "HEADER_DIFFERS", entry["je_number"])}
    differs = next(r for r in rows if r["problem"] == "HEADER_DIFFERS")
    assert differs["detail"] == f"je_date {new_date}, sealed {entry['je_date']}"


def test_changed_line_date(batch: dict[str, Any], target: db.Target,
                           conn: psycopg.Connection) -> None:
    """A line dated otherwise than its header. Version 2 seals the date once, in
    the header, so its range still hashes to the seal; the disagreement is
    damage all the same, caught and located."""
    entry = entry_in(conn, batch, offset=9)
    day = 2 if entry["je_date"].day != 2 else 3
    new_date = entry["je_date"].replace(day=day)
    tamper(conn, "UPDATE gl.journal_entry_line SET je_date = %(d)s "
                 "WHERE je_id = %(je_id)s AND line_no = 2",
           params={"d": new_date, "je_id": entry["je_id"]})
    rows = verify_batch(target, batch["batch_id"])
    expected = {(RANGE, "LINE_DATE_MISMATCH", None),
                (RANGE, "LINE_DATE_MISMATCH", entry["je_number"])}
    if batch["run"]["seal_version"] == 1:
        expected |= {(RANGE, "RANGE_DIGEST_MISMATCH", None),
                     (RANGE, "LINE_DIFFERS", entry["je_number"])}
    assert problems(rows) == expected
    located = next(r for r in rows if r["problem"] == "LINE_DATE_MISMATCH" and r["je_id"])
    assert f"line 2 {new_date}" in located["detail"]


def test_row_moved_to_another_batch(batch: dict[str, Any], target: db.Target,
                                    conn: psycopg.Connection) -> None:
    """A line given another batch's batch_id: both batches and the ledger say so."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "100", "--seed", "6",
                 check=True)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--range-size", "250", "--json",
                        check=True)
    other = json.loads(proc.stdout)["batch_id"]
    entry = entry_in(conn, batch, offset=9)
    tamper(conn, "UPDATE gl.journal_entry_line SET batch_id = %(other)s "
                 "WHERE je_id = %(je_id)s AND line_no = 3",
           params={"other": other, "je_id": entry["je_id"]})
    found = problems(verify_batch(target, batch["batch_id"]))
    assert (RANGE, "BATCH_ID_MISMATCH", entry["je_number"]) in found
    assert (RANGE, "LINE_MISSING", entry["je_number"]) in found
    assert (RANGE, "RANGE_DIGEST_MISMATCH", None) in found
    assert {p for p in found if p[0] != RANGE} == set()
    stray = verify_batch(target, other)
    assert [(r["problem"], r["je_id"]) for r in stray] == [
        ("ROWS_OUTSIDE_RANGES", entry["je_id"])]
    assert {(r["batch_id"], r["problem"]) for r in verify_ledger(target)} == {
        (batch["batch_id"], "BATCH_ROWS_MISMATCH"), (other, "BATCH_ROWS_MISMATCH")}


# --------------------------------------------------------------------------- the audit chain


def test_deleted_audit_row(batch: dict[str, Any], target: db.Target,
                           conn: psycopg.Connection) -> None:
    victim = conn.execute("SELECT min(seq) AS seq FROM audit.log WHERE event = 'RANGE_DONE'"
                          ).fetchone()["seq"]
    tamper(conn, "DELETE FROM audit.log WHERE seq = %(seq)s", params={"seq": victim})
    rows = verify_chain(target)
    assert {(r["seq"], r["problem"]) for r in rows} == {(victim + 1, "SEQUENCE_GAP"),
                                                        (victim + 1, "BROKEN_LINK")}
    gap = next(r for r in rows if r["problem"] == "SEQUENCE_GAP")
    assert gap["detail"] == f"row {victim + 1} follows row {victim - 1}: row {victim} is missing"
    # The range whose RANGE_DONE event went is named too.
    record = [r for r in verify_batch(target, batch["batch_id"])]
    assert [r["problem"] for r in record] == ["RANGE_RECORD_MISMATCH"]
    assert "no RANGE_DONE event" in record[0]["detail"]


def test_swapped_audit_rows(batch: dict[str, Any], target: db.Target,
                            conn: psycopg.Connection) -> None:
    first, second = 20, 25
    tamper(conn, """
        UPDATE audit.log AS l
           SET at = o.at, event = o.event, batch_id = o.batch_id, payload = o.payload,
               actor = o.actor
          FROM audit.log AS o
         WHERE (l.seq, o.seq) IN ((%(a)s, %(b)s), (%(b)s, %(a)s))""",
           params={"a": first, "b": second})
    assert {(r["seq"], r["problem"]) for r in verify_chain(target)} == {
        (first, "HASH_MISMATCH"), (second, "HASH_MISMATCH")}


def test_altered_audit_payload(batch: dict[str, Any], target: db.Target,
                               conn: psycopg.Connection) -> None:
    victim = conn.execute("""
        SELECT seq, (payload ->> 'range_no')::int AS range_no FROM audit.log
        WHERE event = 'RANGE_DONE' AND batch_id = %s AND (payload ->> 'range_no')::int = %s
        """, (batch["batch_id"], RANGE)).fetchone()
    tamper(conn, "UPDATE audit.log SET payload = jsonb_set(payload, '{digest}', "
                 "to_jsonb(repeat('0', 64))) WHERE seq = %(seq)s",
           params={"seq": victim["seq"]})
    assert [(r["seq"], r["problem"]) for r in verify_chain(target)] == [
        (victim["seq"], "HASH_MISMATCH")]
    rows = verify_batch(target, batch["batch_id"])
    assert [(r["range_no"], r["problem"]) for r in rows] == [(RANGE, "RANGE_RECORD_MISMATCH")]
    assert f"RANGE_DONE (row {victim['seq']}) digest {'0' * 64}" in rows[0]["detail"]


def test_truncated_chain_tail(batch: dict[str, Any], target: db.Target,
                              conn: psycopg.Connection, tmp_path: Path) -> None:
    """The last rows removed and the head reset: the chain is consistent again, but the
    seal is gone (so the batch says so), and a kept head is no longer in it."""
    head_file = tmp_path / "head.json"
    code, _ = verify_cli(target, "--head-file", str(head_file), "--no-record")
    assert code == 0
    kept = json.loads(head_file.read_text())
    seal = conn.execute("SELECT seq FROM audit.log WHERE event = 'BATCH_COMMITTED' "
                        "AND batch_id = %s", (batch["batch_id"],)).fetchone()["seq"]
    last_range_done = conn.execute(
        "SELECT (payload ->> 'range_no')::int AS range_no FROM audit.log WHERE seq = %s",
        (seal - 1,)).fetchone()["range_no"]
    tamper(conn, "DELETE FROM audit.log WHERE seq >= %(cut)s",
           """UPDATE audit.chain_head AS h SET seq = l.seq, hash = l.hash
              FROM (SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1) AS l""",
           params={"cut": seal - 1})
    assert verify_chain(target) == []
    rows = verify_batch(target, batch["batch_id"])
    assert {(r["range_no"], r["problem"]) for r in rows} == {
        (None, "SEAL_MISSING"), (last_range_done, "RANGE_RECORD_MISMATCH")}
    kept_rows = verify_kept_head(target, kept)
    assert [(r["seq"], r["problem"]) for r in kept_rows] == [(kept["seq"], "KEPT_HEAD_MISSING")]

    code, result = verify_cli(target, "--head-file", str(head_file), "--no-record")
    assert code == 1
    assert result["kept_head_problems"] == kept_rows
    assert result["head_file"]["updated"] is False
    assert json.loads(head_file.read_text()) == kept


def test_chain_rewritten_from_genesis(batch: dict[str, Any], target: db.Target,
                                      conn: psycopg.Connection, tmp_path: Path) -> None:
    """An event altered and every hash recomputed from genesis: the chain is consistent,
    the batches verify, and only a head kept outside the database shows it."""
    head_file = tmp_path / "head.json"
    code, _ = verify_cli(target, "--head-file", str(head_file))
    assert code == 0
    kept = json.loads(head_file.read_text())
    tamper(conn,
           """UPDATE audit.log SET payload = payload || '{"checksum": "rewritten"}'
              WHERE seq = 5""",
           """WITH RECURSIVE chain (seq, prev_hash, hash) AS (
                  SELECT l.seq, sha256(''::bytea),
                         sha256(sha256(''::bytea) || convert_to(audit.canonical_log_text(
                             l.seq, l.at, l.event, l.batch_id, l.actor, l.payload), 'UTF8'))
                  FROM audit.log AS l WHERE l.seq = 1
                  UNION ALL
                  SELECT l.seq, c.hash,
                         sha256(c.hash || convert_to(audit.canonical_log_text(
                             l.seq, l.at, l.event, l.batch_id, l.actor, l.payload), 'UTF8'))
                  FROM chain AS c JOIN audit.log AS l ON l.seq = c.seq + 1)
              UPDATE audit.log AS l SET prev_hash = c.prev_hash, hash = c.hash
              FROM chain AS c WHERE c.seq = l.seq""",
           """UPDATE audit.chain_head AS h SET seq = l.seq, hash = l.hash
              FROM (SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1) AS l""")
    assert verify_chain(target) == []
    assert verify_batch(target, batch["batch_id"]) == []
    assert verify_ledger(target) == []
    rows = verify_kept_head(target, kept)
    assert [(r["seq"], r["problem"]) for r in rows] == [(kept["seq"], "KEPT_HEAD_MISMATCH")]
    assert kept["hash"] in rows[0]["detail"]

    code, result = verify_cli(target, "--head-file", str(head_file))
    assert code == 1
    assert result["problem_counts"] == {"chain": 0, "ledger": 0, "batch": 0, "period": 0,
                                        "kept_head": 1, "archive": 0}
    assert result["kept_head_problems"] == rows
    assert json.loads(head_file.read_text()) == kept
