"""tools/range_ablation.py derives twins of batch.process_range from the live
procedure, each without one part. What a twin does is tested, not its text: on
the same claimed range it writes the same entries, lines, totals and checks as
the procedure, and lacks exactly its part."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from conftest import monthend_cli, preflight_and_allocate
from monthend import db

TOOL = Path(__file__).resolve().parents[1] / "tools" / "range_ablation.py"
PERIOD = "2025-01"


def _tool():
    spec = importlib.util.spec_from_file_location("range_ablation", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()
# What each twin leaves out of a range's output; everything else must be equal.
ABLATED = {"seal": {"digest", "sealed"}, "balance_check": set(),
           "digest_order": {"digest", "sealed"}}


def test_every_part_has_an_expectation() -> None:
    assert set(tool.PARTS) == set(ABLATED)


@pytest.fixture
def allocated(target, conn: psycopg.Connection) -> int:
    """An ALLOCATED batch of a small period, its ranges not yet claimed."""
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", "200", "--seed", "4",
                 check=True)
    batch_id = db.call_one(conn, "start_run", period=PERIOD, workers=1, range_size=10_000,
                           max_attempts=10, mode="FINAL")["p_batch_id"]
    preflight_and_allocate(conn, batch_id)
    return batch_id


def claim(conn: psycopg.Connection, batch_id: int) -> int:
    return db.call_one(conn, "claim_range", batch_id=batch_id, worker="test")["p_range_id"]


def output(conn: psycopg.Connection, batch_id: int, range_id: int) -> dict[str, Any]:
    """Everything processing a range leaves behind, in a comparable order."""
    def rows(query: sql.Composable, *params: Any) -> list[dict[str, Any]]:
        return conn.execute(query, params).fetchall()

    stage = {table: sql.Identifier("batch", f"stage_journal_entry_{table}_{batch_id}")
             for table in ("header", "line")}
    done = rows(sql.SQL("SELECT status, line_count, digest FROM batch.range "
                        "WHERE range_id = %s"), range_id)[0]
    return {
        "headers": rows(sql.SQL("SELECT * FROM {} ORDER BY je_id").format(stage["header"])),
        "lines": rows(sql.SQL("SELECT * FROM {} ORDER BY je_id, line_no")
                      .format(stage["line"])),
        "totals": rows(sql.SQL("SELECT * FROM batch.range_total WHERE range_id = %s "
                               "ORDER BY currency"), range_id),
        "checks": rows(sql.SQL("SELECT check_name, status, expected, actual "
                               "FROM batch.validation_result WHERE range_id = %s "
                               "ORDER BY check_name"), range_id),
        "status": (done["status"], done["line_count"]),
        "digest": done["digest"],
        "sealed": rows(sql.SQL("SELECT payload FROM audit.log WHERE event = 'RANGE_DONE' "
                               "AND batch_id = %s"), batch_id),
    }


@pytest.mark.parametrize("part", sorted(tool.PARTS))
def test_twin_writes_the_range_without_its_part(conn, allocated, part: str) -> None:
    # Deriving the twin finds every marker it needs in the live procedure, and
    # the result is PL/pgSQL the server accepts.
    conn.execute(tool.twin_of(tool.PROCEDURE_FILE.read_text(), part))
    range_id = claim(conn, allocated)
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("CALL batch.{}(%s)").format(
            sql.Identifier(f"process_range_without_{part}")), (range_id,))
        twin = output(conn, allocated, range_id)
    # The twin gave up the claim (a session lock, which no rollback restores):
    # the range is claimable again, and the procedure itself processes it.
    assert claim(conn, allocated) == range_id
    db.call(conn, "process_range", range_id=range_id)
    real = output(conn, allocated, range_id)

    assert real["status"] == ("DONE", len(real["lines"])) and real["headers"]
    assert len(real["digest"]) == 32 and len(real["sealed"]) == 1
    assert {k: v for k, v in twin.items() if k not in ABLATED[part]} == \
        {k: v for k, v in real.items() if k not in ABLATED[part]}
    if part == "seal":
        # No digest; the range's RANGE_DONE row (batch.complete_range) stays, without one.
        assert twin["digest"] is None
        assert [row["payload"]["digest"] for row in twin["sealed"]] == [None]
    elif part == "digest_order":
        # The same rows hashed in whatever order they come: still a digest, and sealed.
        assert len(twin["digest"]) == 32 and len(twin["sealed"]) == 1


@pytest.mark.parametrize("part", sorted(tool.PARTS))
def test_a_procedure_without_the_part_is_refused_not_measured_wrongly(part: str) -> None:
    without = tool.PARTS[part](tool.PROCEDURE_FILE.read_text())
    with pytest.raises(SystemExit, match=part):
        tool.twin_of(without, part)
