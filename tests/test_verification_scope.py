"""What each kind of verification reads and catches: incremental verification
since a kept head reads only what is new (it never touches an earlier
batch's partitions), full verification over several sessions finds what one
session finds, the chain is checked between two kept heads outside the
database, and the auditor's watch exports its verdict and writes nothing but
its head file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from audit_helpers import AUDITOR, role_target, tamper
from conftest import monthend_cli
from monthend import db

pytestmark = pytest.mark.full


def post(target: db.Target, period: str, txns: int = 600, seed: int = 1) -> int:
    monthend_cli(target, "generate", "--period", period, "--txns", str(txns), "--seed",
                 str(seed), check=True)
    proc = monthend_cli(target, "run", "--period", period, "--workers", "2", "--range-size",
                        "200", "--json", check=True)
    return int(json.loads(proc.stdout)["batch_id"])


def verify(target: db.Target, *args: str) -> tuple[int, dict[str, Any]]:
    proc = monthend_cli(role_target(target, AUDITOR), "verify", "--json", *args)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def reads_of(conn: psycopg.Connection, period: str) -> int:
    """Heap pages of the period's ledger partitions read so far (flushed by ended
    sessions). Verifying a batch probes every partition's je_id index for rows
    that carry its je_ids under another batch (a forged row could be anywhere);
    a probe that finds none reads no heap page."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    pattern = f"journal_entry_%_{period.replace('-', '_')}%"
    row = conn.execute(
        "SELECT coalesce(sum(coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0)), 0) AS n "
        "FROM pg_statio_user_tables WHERE schemaname = 'gl' AND relname LIKE %s",
        (pattern,)).fetchone()
    return int(row["n"])


def quiet_autovacuum(conn: psycopg.Connection, period: str) -> None:
    """Keep autovacuum off the period's ledger partitions: the batch's inserts
    make them due for an insert-triggered vacuum at any moment, whose page
    reads the statistics would count as the verification's."""
    pattern = f"journal_entry_%_{period.replace('-', '_')}%"
    for row in conn.execute("SELECT c.oid::regclass AS rel FROM pg_class AS c "
                            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = 'gl' AND c.relkind = 'r' AND c.relname LIKE %s",
                            (pattern,)).fetchall():
        conn.execute(f"ALTER TABLE {row['rel']} SET (autovacuum_enabled = false)")


def damage(conn: psycopg.Connection, batch_id: int) -> str:
    """Change one line of the batch; the je_number of its entry."""
    victim = conn.execute("SELECT je_id, je_number FROM gl.journal_entry_header "
                          "WHERE batch_id = %s ORDER BY je_id LIMIT 1 OFFSET 7",
                          (batch_id,)).fetchone()
    tamper(conn, "UPDATE gl.journal_entry_line SET debit = debit + 1 "
                 "WHERE je_id = %(je_id)s AND line_no = 1", params=victim)
    return str(victim["je_number"])


def test_since_head_reads_only_what_is_new(target: db.Target, conn: psycopg.Connection,
                                           tmp_path: Path) -> None:
    first = post(target, "2025-01")
    quiet_autovacuum(conn, "2025-01")
    head = tmp_path / "head.json"
    code, full = verify(target, "--full", "--head-file", str(head))
    assert code == 0 and full["batches_verified"] == [first] and head.exists()
    kept = json.loads(head.read_text())

    second = post(target, "2025-02", seed=2)
    before_old, before_new = reads_of(conn, "2025-01"), reads_of(conn, "2025-02")
    code, result = verify(target, "--since-head", str(head))
    assert code == 0, result
    assert result["mode"] == "incremental" and not result["ledger_checked"]
    assert result["batches_verified"] == [second]
    assert result["chain_verified_after_seq"] == kept["seq"]
    assert result["kept_head"] == {"seq": kept["seq"], "hash": kept["hash"]}
    # Nothing of the earlier batch was read (a page or two is the planner
    # looking up an index's end values to estimate the je_id probe); the new
    # one was read whole.
    assert reads_of(conn, "2025-01") - before_old <= 4
    assert reads_of(conn, "2025-02") - before_new > 100
    now = json.loads(head.read_text())
    assert now["seq"] == result["head"]["seq"] > kept["seq"]
    recorded = conn.execute("SELECT payload FROM audit.log WHERE seq = %s",
                            (result["recorded_seq"],)).fetchone()["payload"]
    assert f"verify_chain_after_{kept['seq']}" in recorded["checks"]
    assert "verify_ledger" not in recorded["checks"]

    # One batch's verification checks the kept head but does not move it: it
    # says nothing of the other batches, which --since-head would then skip.
    post(target, "2025-04", seed=4)
    code, one = verify(target, "--batch", str(second), "--head-file", str(head))
    assert code == 0 and one["head_file"]["updated"] is False
    assert json.loads(head.read_text()) == now

    # Damage to what is new is caught, and the kept head stays where it was.
    third = post(target, "2025-03", seed=3)
    je_number = damage(conn, third)
    kept_before = head.read_text()
    code, result = verify(target, "--since-head", str(head))
    assert code == 1 and result["batches_with_problems"] == [third]
    assert len(result["batches_verified"]) == 2
    assert any(p["je_number"] == je_number for p in result["batch_problems"][str(third)])
    assert head.read_text() == kept_before

    # Damage to what an earlier verification passed is a full verification's.
    je_number = damage(conn, first)
    code, one = verify(target, "--full", "--no-record")
    code2, two = verify(target, "--full", "--jobs", "3", "--no-record")
    assert code == code2 == 1 and two["jobs"] == 3 and one["jobs"] == 1
    for key in ("problem_counts", "batch_problems", "chain_problems", "ledger_problems",
                "batches_with_problems", "head"):
        assert one[key] == two[key], key
    assert sorted(two["batches_with_problems"]) == sorted([first, third])


def test_since_head_needs_a_kept_head(target: db.Target, tmp_path: Path) -> None:
    proc = monthend_cli(target, "verify", "--since-head", str(tmp_path / "none.json"))
    assert proc.returncode == 2
    assert "monthend verify --full --head-file" in proc.stderr


def test_chain_between_two_kept_heads(target: db.Target, conn: psycopg.Connection,
                                      tmp_path: Path) -> None:
    post(target, "2025-01")
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    assert verify(target, "--full", "--head-file", str(old), "--no-record")[0] == 0
    post(target, "2025-02", seed=2)
    shutil.copy(old, new)
    assert verify(target, "--since-head", str(new), "--no-record")[0] == 0
    code, result = verify(target, "--from-head", str(old), "--to-head", str(new))
    assert code == 0 and result["ok"]
    o, n = json.loads(old.read_text()), json.loads(new.read_text())
    assert result["rows_checked"] == n["seq"] - o["seq"] > 5

    # One row between them altered: its hash no longer matches its content.
    victim = o["seq"] + 3
    tamper(conn, "UPDATE audit.log SET actor = 'someone else' WHERE seq = %(s)s",
           params={"s": victim})
    code, result = verify(target, "--from-head", str(old), "--to-head", str(new))
    assert code == 1
    assert [(p["seq"], p["problem"]) for p in result["problems"]] == [(victim, "HASH_MISMATCH")]

    proc = monthend_cli(target, "verify", "--from-head", str(new), "--to-head", str(old))
    assert proc.returncode == 2 and "give the earlier head as --from-head" in proc.stderr


def test_watch_exports_the_verdict_and_writes_only_its_head(
        target: db.Target, conn: psycopg.Connection, tmp_path: Path) -> None:
    post(target, "2025-01")
    head, metrics = tmp_path / "head.json", tmp_path / "audit.prom"
    assert verify(target, "--full", "--head-file", str(head), "--no-record")[0] == 0
    batch_id = post(target, "2025-02", seed=2)
    chain_before = conn.execute("SELECT seq FROM audit.head()").fetchone()["seq"]

    def watch() -> tuple[int, dict[str, float]]:
        proc = monthend_cli(role_target(target, AUDITOR), "verify", "--watch", "--head-file",
                            str(head), "--textfile", str(metrics), "--count", "1",
                            "--interval", "1")
        gauges = {line.split()[0]: float(line.split()[1])
                  for line in metrics.read_text().splitlines() if not line.startswith("#")}
        return proc.returncode, gauges

    code, gauges = watch()
    assert code == 0
    assert gauges["monthend_audit_ok"] == 1
    assert gauges["monthend_audit_verified_seq"] == chain_before
    assert gauges["monthend_audit_verify_seconds"] > 0
    # The watch appended nothing to the chain.
    assert conn.execute("SELECT seq FROM audit.head()").fetchone()["seq"] == chain_before

    third = post(target, "2025-03", seed=3)
    damage(conn, third)
    code, gauges = watch()
    assert code == 1
    assert gauges["monthend_audit_ok"] == 0 and gauges["monthend_audit_problems"] > 0
    assert gauges["monthend_audit_verified_seq"] == chain_before
    assert json.loads(head.read_text())["seq"] == chain_before
    assert batch_id < third
