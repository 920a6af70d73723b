"""The ledger's partitions: listed with their batches, rows, size and period,
made ahead of the runs that need them, and the health check that warns when
they are not."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from conftest import monthend_cli
from monthend import db


def partitions(target: db.Target, *args: str) -> dict[str, Any]:
    proc = monthend_cli(target, "partitions", *args, "--json", check=True)
    return dict(json.loads(proc.stdout))


def premade_check(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM batch.health_check "
                       "WHERE check_name = 'partitions_premade'").fetchone()
    assert row is not None
    return dict(row)


def test_partitions_list_months_and_their_batches(target: db.Target,
                                                  conn: psycopg.Connection) -> None:
    monthend_cli(target, "generate", "--period", "2025-01", "--txns", "300", "--seed", "2",
                 check=True)
    proc = monthend_cli(target, "run", "--period", "2025-01", "--workers", "1", "--json",
                        check=True)
    batch_id = json.loads(proc.stdout)["batch_id"]
    run = conn.execute("SELECT je_count, line_count FROM batch.run WHERE batch_id = %s",
                       (batch_id,)).fetchone()
    listed = partitions(target)["partitions"]
    mine = {(p["ledger_table"], p["batch_id"]): p for p in listed if p["period"] == "2025-01"}
    assert set(mine) == {("journal_entry_header", None), ("journal_entry_line", None),
                         ("journal_entry_header", batch_id), ("journal_entry_line", batch_id)}
    # Rows are the statistics' count, exact after the run's ANALYZE.
    assert mine["journal_entry_header", batch_id]["rows"] == run["je_count"]
    assert mine["journal_entry_line", batch_id]["rows"] == run["line_count"]
    assert mine["journal_entry_line", None]["rows"] == run["line_count"]
    assert mine["journal_entry_line", None]["bytes"] >= mine["journal_entry_line", batch_id][
        "bytes"] > 0
    assert all(p["location"] == "ATTACHED" and p["period_status"] == "OPEN"
               for p in mine.values())
    assert mine["journal_entry_header", batch_id]["partition_name"] == \
        f"gl.journal_entry_header_2025_01_b{batch_id}"


def test_ensure_makes_the_months_ahead_and_the_health_check_sees_them(
        target: db.Target, conn: psycopg.Connection) -> None:
    conn.execute("CALL gl.open_period('2031-04', NULL)")
    check = premade_check(conn)
    assert check["status"] == "WARNING" and check["value"] == "0 month(s)"
    assert "monthend partitions ensure" in check["action"]

    made = partitions(target, "ensure", "--ahead", "2")
    assert made["premade"] == {"base_period": "2031-04", "months": 2}
    assert {"gl.journal_entry_header_2031_05", "gl.journal_entry_line_2031_06",
            "batch.source_claim_2031_06", "gl.journal_entry_header_2031_04"} <= set(
        made["created"])
    assert "gl.journal_entry_header_2031_07" not in made["created"]
    assert premade_check(conn)["status"] == "OK"
    # Idempotent: nothing left to make.
    assert partitions(target, "ensure", "--ahead", "2")["created"] == []
    # The runner may make them (a scheduler runs it as the runner).
    conn.execute("SET ROLE monthend_runner")
    try:
        names = conn.execute("SELECT * FROM gl.ensure_partitions_ahead(3) AS n").fetchall()
    finally:
        conn.execute("RESET ROLE")
    assert [r["n"] for r in names] == ["gl.journal_entry_header_2031_07",
                                       "gl.journal_entry_line_2031_07",
                                       "batch.source_claim_2031_07"]

    proc = monthend_cli(target, "partitions", "ensure", "--ahead", "500")
    assert proc.returncode == 2
