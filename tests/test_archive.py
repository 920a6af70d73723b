"""The archive of a period: written, verified with no database, let go,
restored; a changed byte anywhere fails naming the file; a period that is not
permanently closed is refused; a kill at each step leaves the period either
in the database and intact or archived and verified."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit_helpers import sealing_by
from conftest import monthend_cli
from faults import finish, hold_lock, kill_process, start_cli, wait_for, wait_for_lock_wait
from ledger_fingerprint import ledger_fingerprint
from monthend import db
from monthend.archive_files import FILES, MANIFEST

# Every test posts batches through the CLI, and one kills processes: the full tier.
pytestmark = pytest.mark.full

PERIOD = "2025-01"
SUFFIX = PERIOD.replace("-", "_")
PARTITIONS = [f"gl.journal_entry_header_{SUFFIX}", f"gl.journal_entry_line_{SUFFIX}",
              f"batch.source_claim_{SUFFIX}"]


def cli(target: db.Target, *args: str, expect: int = 0) -> dict[str, Any]:
    proc = monthend_cli(target, *args, "--json")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}


def offline(directory: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """`monthend verify --archive`, with a DSN that leads nowhere: no database."""
    proc = monthend_cli(db.Target("host=/nonexistent", "--dsn"), "verify", "--archive",
                        str(directory), "--json", *args)
    assert proc.returncode in (0, 1) and proc.stdout, proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def status_of(conn: psycopg.Connection, period: str = PERIOD) -> str:
    return conn.execute("SELECT status FROM gl.accounting_period WHERE period = %s",
                        (period,)).fetchone()["status"]


def partitions(conn: psycopg.Connection) -> list[str]:
    return [p for p in PARTITIONS
            if conn.execute("SELECT to_regclass(%s) AS r", (p,)).fetchone()["r"] is not None]


def locked_period(target: db.Target, conn: psycopg.Connection, txns: int = 900) -> list[int]:
    """PERIOD permanently closed with three batches: a run sealed by version 1, its
    reversal by sign and the run that posts the rows again (version 2)."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", str(txns), "--seed", "5",
                 check=True)
    with sealing_by(conn, 1):
        first = cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size", "200")
    reversal = cli(target, "reverse", str(first["batch_id"]), "--reason", "RULE_ERROR",
                   "--method", "sign")
    again = cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size", "200")
    monthend_cli(target, "period", "close", PERIOD, "--carry-dead-letters", check=True)
    monthend_cli(target, "period", "lock", PERIOD, check=True)
    assert status_of(conn) == "PERMANENTLY_CLOSED"
    return [first["batch_id"], reversal["batch_id"], again["batch_id"]]


def ledger(conn: psycopg.Connection) -> dict[str, Any]:
    """The period's ledger fingerprint, whatever its status."""
    found = ledger_fingerprint(conn, PERIOD)
    found["period"].pop("status")
    return found


def batch_problems(conn: psycopg.Connection, batches: list[int]) -> dict[int, list[Any]]:
    return {b: conn.execute("SELECT * FROM audit.verify_batch(%s)", (b,)).fetchall()
            for b in batches}


def test_archive_let_go_verify_restore_and_archive_again(target: db.Target,
                                                         conn: psycopg.Connection,
                                                         tmp_path: Path) -> None:
    batches = locked_period(target, conn)
    before = ledger(conn)
    directory = tmp_path / "archive" / PERIOD
    kept = tmp_path / "head-before-archive.json"
    assert cli(target, "verify", "--full", "--head-file", str(kept))["ok"]

    result = cli(target, "archive", "--period", PERIOD, "--to", str(directory))
    assert result["status"] == "ARCHIVED" and result["written"] and result["batches"] == 3
    manifest = json.loads((directory / MANIFEST).read_text())
    assert {f["name"] for f in manifest["files"]} == {f.name for f in FILES}
    assert {b["seal_version"] for b in manifest["batches"]} == {1, 2}

    # Let go: the partitions are gone, the chain says so with the manifest's digest.
    assert status_of(conn) == "ARCHIVED" and partitions(conn) == []
    event = conn.execute("SELECT payload FROM audit.log WHERE event = 'PERIOD_ARCHIVED' "
                         "ORDER BY seq DESC LIMIT 1").fetchone()["payload"]
    assert event["manifest_sha256"] == result["manifest_sha256"]
    assert event["location"] == str(directory.resolve())

    # The archive verifies with no database; the database verifies without it.
    code, checked = offline(directory)
    assert code == 0 and checked["problems"] == [], checked
    verified = cli(target, "verify", "--full")
    assert verified["ok"], verified
    assert [a["period"] for a in verified["archived_periods"]] == [PERIOD]
    assert not set(verified["batches_verified"]) & set(batches)
    assert conn.execute("SELECT count(*) AS n FROM audit.verify_chain()").fetchone()["n"] == 0

    # Verification since a head kept before the let-go checks the archive, at
    # the directory the chain recorded; a changed byte there fails it.
    for name in ("pass.json", "fail.json"):
        shutil.copy(kept, tmp_path / name)
    since = cli(target, "verify", "--since-head", str(tmp_path / "pass.json"))
    assert since["ok"] and since["archived_periods"][0]["checked"], since
    fx = directory / "fx_rate.csv.gz"
    original = fx.read_bytes()
    fx.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    since = cli(target, "verify", "--since-head", str(tmp_path / "fail.json"), expect=1)
    assert since["problem_counts"]["archive"] > 0
    assert any("fx_rate.csv.gz" in p["detail"] for p in since["archived_periods"][0]["problems"])
    fx.write_bytes(original)

    # Its source rows stay as they were posted.
    with pytest.raises(psycopg.errors.ObjectInUse, match="archived"):
        conn.execute("UPDATE subledger.premium_transaction SET amount = amount + 1 "
                     "WHERE txn_id = (SELECT min(txn_id) FROM subledger.premium_transaction "
                     "WHERE payment_date BETWEEN '2025-01-01' AND '2025-01-31')")

    # An archived period is not corrected.
    refused = monthend_cli(target, "reverse", str(batches[2]), "--reason", "OTHER")
    assert refused.returncode == 2 and "archived" in refused.stderr

    # Restore: the same rows, the same seals.
    restored = cli(target, "restore", "--from", str(directory))
    assert restored["status"] == "RESTORED" and status_of(conn) == "RESTORED"
    assert ledger(conn) == before
    assert batch_problems(conn, batches) == {b: [] for b in batches}
    assert cli(target, "verify", "--full")["ok"]

    # Archive again: dropped, the files untouched.
    stamps = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    again = cli(target, "archive", "--period", PERIOD, "--to", str(directory))
    assert again["status"] == "ARCHIVED" and not again["written"]
    assert again["manifest_sha256"] == result["manifest_sha256"]
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == stamps
    assert partitions(conn) == []
    events = [r["event"] for r in conn.execute(
        "SELECT event FROM audit.log WHERE payload ->> 'period' = %s AND event LIKE 'PERIOD_%%' "
        "ORDER BY seq", (PERIOD,))]
    assert events[-3:] == ["PERIOD_ARCHIVED", "PERIOD_RESTORED", "PERIOD_ARCHIVED"]


def test_a_period_with_its_period_end_archives_and_restores(target: db.Target,
                                                            conn: psycopg.Connection,
                                                            tmp_path: Path) -> None:
    """A period-end is archived as every batch is, its entries by its seal; its
    detail (the UPR of each policy, the items, the FX detail) stays in the
    database, where the next period-end reads the UPR it starts from."""
    conn.execute("UPDATE gl.setting SET period_end_required = true")
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "600", "--seed", "5",
                 check=True)
    run = cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size", "200")
    pe = cli(target, "period-end", "--period", PERIOD, "--workers", "2", "--range-size", "20")
    monthend_cli(target, "period", "close", PERIOD, "--carry-dead-letters", check=True)
    monthend_cli(target, "period", "lock", PERIOD, check=True)
    batches = [run["batch_id"], pe["batch_id"]]
    before = ledger(conn)
    assert before["upr_md5"] is not None and before["items_md5"] is not None

    directory = tmp_path / "archive"
    result = cli(target, "archive", "--period", PERIOD, "--to", str(directory))
    assert result["status"] == "ARCHIVED" and result["batches"] == 2
    code, checked = offline(directory)
    assert code == 0 and checked["problems"] == [], checked
    assert cli(target, "verify", "--full")["ok"]
    assert ledger(conn)["upr_md5"] == before["upr_md5"]

    restored = cli(target, "restore", "--from", str(directory))
    assert restored["status"] == "RESTORED"
    assert ledger(conn) == before
    assert batch_problems(conn, batches) == {b: [] for b in batches}


def test_a_period_not_permanently_closed_is_refused(target: db.Target, conn: psycopg.Connection,
                                                    tmp_path: Path) -> None:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "200", check=True)
    cli(target, "run", "--period", PERIOD)
    for status in ("OPEN", "CLOSED"):
        if status == "CLOSED":
            monthend_cli(target, "period", "close", PERIOD, "--carry-dead-letters", check=True)
        assert status_of(conn) == status
        proc = monthend_cli(target, "archive", "--period", PERIOD, "--to", str(tmp_path / "a"))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"period {PERIOD} is {status}" in proc.stderr
        assert "monthend period lock" in proc.stderr
        assert not (tmp_path / "a").exists() and len(partitions(conn)) == 3
    # The procedure refuses on its own too, whoever calls it.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("CALL gl.archive_period(%s, 'x', '/nowhere', '{}')", (PERIOD,))


def _rewrite(path: Path, change: Any) -> None:
    """The file decompressed, changed by ``change(text) -> text``, compressed again."""
    content = gzip.decompress(path.read_bytes()).decode()
    changed = change(content)
    assert changed != content
    path.write_bytes(gzip.compress(changed.encode()))


def _one_amount_changed(text: str) -> str:
    """The first line's debit or credit, whichever is not zero, one cent more."""
    rows = text.split("\n")
    columns = rows[0].split(",")
    fields = rows[1].split(",")
    for name in ("debit", "credit"):
        k = columns.index(name)
        if fields[k] not in ("0", "0.00"):
            fields[k] = f"{float(fields[k]) + 0.01:.2f}"
            break
    rows[1] = ",".join(fields)
    return "\n".join(rows)


def test_a_changed_byte_fails_naming_the_file(target: db.Target, conn: psycopg.Connection,
                                              tmp_path: Path) -> None:
    locked_period(target, conn, txns=300)
    archive = tmp_path / "archive"
    cli(target, "archive", "--period", PERIOD, "--to", str(archive))
    for spec in FILES:
        copy = tmp_path / f"flip-{spec.stem}"
        shutil.copytree(archive, copy)
        data = bytearray((copy / spec.name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / spec.name).write_bytes(bytes(data))
        code, checked = offline(copy)
        assert code == 1, spec.name
        assert {p["file"] for p in checked["problems"]} >= {spec.name}, checked["problems"]

    # Changed inside and compressed again: the sha256 names the file, the
    # content names the entry and the range.
    copy = tmp_path / "amount"
    shutil.copytree(archive, copy)
    _rewrite(copy / "journal_entry_line.csv.gz", _one_amount_changed)
    code, checked = offline(copy)
    found = {p["problem"]: p for p in checked["problems"]}
    assert code == 1 and found["FILE_SHA256_MISMATCH"]["file"] == "journal_entry_line.csv.gz"
    assert found["ENTRY_UNBALANCED"]["je_number"].startswith(PERIOD)
    assert found["RANGE_ROOT_MISMATCH"]["range_no"] is not None

    copy = tmp_path / "description"
    shutil.copytree(archive, copy)
    _rewrite(copy / "journal_entry_header.csv.gz",
             lambda t: t.replace("PREMIUM", "PREMIUMS", 1))
    code, checked = offline(copy)
    assert code == 1
    assert "RANGE_ROOT_MISMATCH" in {p["problem"] for p in checked["problems"]}

    # A batch taken out of the files and the manifest is still in the seal and the chain.
    copy = tmp_path / "batch-removed"
    shutil.copytree(archive, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    removed = manifest["batches"].pop()["batch_id"]
    _rewrite(copy / "run.csv.gz", lambda t: "\n".join(
        r for r in t.split("\n") if not r.startswith(f"{removed},")))
    (copy / MANIFEST).write_text(json.dumps(manifest))
    code, checked = offline(copy)
    missing = {(p["problem"], p["file"], p["batch_id"]) for p in checked["problems"]}
    assert ("BATCH_MISSING", "run.csv.gz", removed) in missing
    assert ("BATCH_MISSING", "manifest.json", removed) in missing

    copy = tmp_path / "balance"
    shutil.copytree(archive, copy)
    _rewrite(copy / "period_balance.csv.gz", lambda t: t.replace(f"{PERIOD},", f"{PERIOD},9", 1))
    code, checked = offline(copy)
    assert "PERIOD_SEAL_MISMATCH" in {p["problem"] for p in checked["problems"]}

    # A kept head in the archived chain must match; a later one is said to be unchecked.
    head = conn.execute("SELECT seq, encode(hash, 'hex') AS hash FROM audit.log "
                        "WHERE event = 'PERIOD_LOCKED' ORDER BY seq DESC LIMIT 1").fetchone()
    kept = tmp_path / "head.json"
    kept.write_text(json.dumps({"seq": head["seq"], "hash": head["hash"]}))
    code, checked = offline(archive, "--head-file", str(kept))
    assert code == 0 and checked["kept_head"]["checked"]
    kept.write_text(json.dumps({"seq": head["seq"], "hash": "0" * 64}))
    code, checked = offline(archive, "--head-file", str(kept))
    assert code == 1 and checked["problems"][0]["problem"] == "KEPT_HEAD_MISMATCH"


def backend_gone(conn: psycopg.Connection, query_like: str, what: str) -> None:
    """Wait until no backend runs (or last ran) ``query_like``: a killed client's
    backend finishes its statement, then finds the client gone and ends."""
    wait_for(lambda: conn.execute(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE %s "
        "AND pid <> pg_backend_pid()", (query_like,)).fetchone()["n"] == 0, what)


def _consistent(conn: psycopg.Connection, directory: Path, before: dict[str, Any],
                batches: list[int]) -> str:
    """Either in the database and intact, or archived and verified; which."""
    status = status_of(conn)
    if status in ("PERMANENTLY_CLOSED", "RESTORED"):
        assert len(partitions(conn)) == 3
        assert ledger(conn) == before
        assert batch_problems(conn, batches) == {b: [] for b in batches}
    else:
        assert status == "ARCHIVED" and partitions(conn) == []
        assert offline(directory)[0] == 0
    return status


def test_a_kill_at_each_step_leaves_a_consistent_period(target: db.Target,
                                                        conn: psycopg.Connection,
                                                        tmp_path: Path) -> None:
    batches = locked_period(target, conn, txns=300)
    before = ledger(conn)
    directory = tmp_path / "archive"

    # 1. Writing: the line file's COPY waits on a lock; killed there.
    with hold_lock(target.conninfo,
                   f"LOCK TABLE gl.journal_entry_line_{SUFFIX} IN ACCESS EXCLUSIVE MODE"):
        proc = start_cli(target, "archive", "--period", PERIOD, "--to", str(directory))
        wait_for_lock_wait(conn, "COPY%journal_entry_line%", proc)
        kill_process(proc)
    assert not (directory / MANIFEST).exists()
    assert _consistent(conn, directory, before, batches) == "PERMANENTLY_CLOSED"

    # 2. Letting go: its transaction checked the archive against the seals
    # and waits to append PERIOD_ARCHIVED (the chain's head is held); killed.
    with hold_lock(target.conninfo, "SELECT * FROM audit.chain_head FOR UPDATE"):
        proc = start_cli(target, "archive", "--period", PERIOD, "--to", str(directory))
        wait_for_lock_wait(conn, "CALL gl.archive_period%", proc)
        kill_process(proc)
    backend_gone(conn, "CALL gl.archive_period%", "the killed let-go's backend to end")
    assert (directory / MANIFEST).exists()
    assert _consistent(conn, directory, before, batches) == "PERMANENTLY_CLOSED"

    # Run again: the archive written before is verified, not rewritten, and let go.
    result = cli(target, "archive", "--period", PERIOD, "--to", str(directory))
    assert not result["written"]
    assert _consistent(conn, directory, before, batches) == "ARCHIVED"

    # 3. Restoring: everything loaded and verified, the PERIOD_RESTORED append
    # waits; killed there.
    with hold_lock(target.conninfo, "SELECT * FROM audit.chain_head FOR UPDATE"):
        proc = start_cli(target, "restore", "--from", str(directory))
        wait_for_lock_wait(conn, "CALL gl.restore_period%", proc)
        kill_process(proc)
    backend_gone(conn, "CALL gl.restore_period%", "the killed restore's backend to end")
    assert _consistent(conn, directory, before, batches) == "ARCHIVED"

    code, out, err = finish(start_cli(target, "restore", "--from", str(directory)))
    assert code == 0, out + err
    assert _consistent(conn, directory, before, batches) == "RESTORED"


def test_archive_due_takes_what_retention_lets_go(target: db.Target, conn: psycopg.Connection,
                                                   tmp_path: Path) -> None:
    locked_period(target, conn, txns=100)
    # Only the archive makes a period ARCHIVED.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="only with its archive"):
        conn.execute("UPDATE gl.accounting_period SET status = 'ARCHIVED' WHERE period = %s",
                     (PERIOD,))
    # PERIOD ended more than 84 months ago only on a far later day: nothing is due.
    assert cli(target, "archive", "--due", "--to", str(tmp_path)) == {"retention_months": 84,
                                                                     "archived": []}
    assert status_of(conn) == "PERMANENTLY_CLOSED"
    conn.execute("UPDATE gl.setting SET retention_months = 1")
    result = cli(target, "archive", "--due", "--to", str(tmp_path))
    assert [a["period"] for a in result["archived"]] == [PERIOD]
    assert result["retention_months"] == 1
    assert status_of(conn) == "ARCHIVED" and (tmp_path / PERIOD / MANIFEST).exists()
    assert offline(tmp_path / PERIOD)[0] == 0
