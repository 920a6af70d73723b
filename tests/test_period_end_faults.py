"""A period-end killed mid-way resumes to the result of a clean one: the driver is
SIGKILLed while the batch's workers are held inside its pre-flight ranges (the
ledger's sums wait on a lock), in its allocation, in its processing (at the
gate) or half-way through its commit; `monthend resume` finishes it. The UPR
detail, the items, the entries and the batch's digest equal those of an
uninterrupted period-end of the same data in a database of its own."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli
from faults import (
    Gate,
    LockHolder,
    fresh_database,
    kill_process,
    start_cli,
    wait_for,
    wait_for_lock_wait,
    wait_until_held,
)
from test_period_end import PERIOD, load

pytestmark = pytest.mark.full

PE_ARGS = ("period-end", "--period", PERIOD, "--workers", "2", "--range-size", "1")


def period_end_result(conn: psycopg.Connection, batch_id: int) -> dict[str, Any]:
    """What a period-end batch left: its detail, items and entries, and its digest."""
    def rows(sql: str) -> list[tuple]:
        return [tuple(r.values()) for r in conn.execute(sql, {"b": batch_id}).fetchall()]

    return {
        "status": conn.execute("SELECT status, digest, je_count FROM batch.run "
                               "WHERE batch_id = %(b)s", {"b": batch_id}).fetchone(),
        "upr": rows("SELECT * FROM gl.upr_detail WHERE batch_id = %(b)s "
                    "ORDER BY policy_id, currency"),
        "items": rows("SELECT * FROM batch.period_end_item WHERE batch_id = %(b)s "
                      "ORDER BY item_id"),
        "fx": rows("SELECT * FROM batch.fx_revaluation_detail WHERE batch_id = %(b)s "
                   "ORDER BY account_code, currency"),
        "headers": rows("SELECT * FROM gl.journal_entry_header WHERE batch_id = %(b)s "
                        "ORDER BY je_id"),
        "lines": rows("SELECT * FROM gl.journal_entry_line WHERE batch_id = %(b)s "
                      "ORDER BY je_id, line_no"),
    }


def prepare(target) -> None:
    with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as conn:
        load(conn)
    monthend_cli(target, "run", "--period", PERIOD, check=True)


@pytest.fixture(scope="module")
def clean_period_end(postgresql_noproc) -> dict[str, Any]:
    with fresh_database(postgresql_noproc) as ref:
        prepare(ref)
        proc = monthend_cli(ref, *PE_ARGS, "--json", check=True)
        document = json.loads(proc.stdout)
        assert document["status"] == "COMMITTED" and document["ranges_retried"] == 0
        with psycopg.connect(ref.conninfo, autocommit=True, row_factory=dict_row) as conn:
            return period_end_result(conn, document["batch_id"])


@pytest.mark.parametrize("point", ["preflight_ranges", "allocation", "processing",
                                   "commit_attach"])
def test_killed_period_end_resumes_to_the_clean_result(target, conn, clean_period_end,
                                                       point):
    prepare(target)
    holders: list[LockHolder] = []
    gate: Gate | None = None
    try:
        if point == "preflight_ranges":
            # The ledger's sums wait to write; the policies' ranges go through.
            holders.append(LockHolder(target.conninfo,
                                      "LOCK TABLE batch.fx_movement_part IN SHARE MODE"))
        elif point == "allocation":
            # Allocation makes the items and ranges, then waits to ANALYZE.
            holders.append(LockHolder(target.conninfo, "LOCK TABLE gl.posting_rule "
                                                       "IN SHARE UPDATE EXCLUSIVE MODE"))
        elif point == "processing":
            gate = Gate(target.conninfo, "> 1")
        else:
            # The commit attaches the ledger's tables, then waits to attach the
            # UPR detail: half the batch attached, uncommitted.
            holders.append(LockHolder(target.conninfo, "LOCK TABLE gl.upr_detail "
                                                       "IN SHARE UPDATE EXCLUSIVE MODE"))
        proc = start_cli(target, *PE_ARGS)
        if point == "preflight_ranges":
            wait_for_lock_wait(conn, "%batch.process_range%", proc)
        elif point == "allocation":
            wait_for_lock_wait(conn, "%batch.allocate_ranges%", proc)
        elif point == "processing":
            wait_until_held(conn, proc, workers=1, done=1)
        else:
            wait_for_lock_wait(conn, "%batch.commit_batch%", proc)
        kill_process(proc)
        batch_id = conn.execute("SELECT batch_id FROM batch.run WHERE kind = 'PERIOD_END'"
                                ).fetchone()["batch_id"]
        # The killed driver's backends finish or roll back once let go.
        for holder in holders:
            holder.release()
        if gate is not None:
            gate.open()
        wait_for(lambda: not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'monthend%' AND state = 'active'").fetchone(),
            "the killed driver's backends to finish")
        resumed = monthend_cli(target, "resume", str(batch_id), "--json")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "COMMITTED"
    finally:
        for holder in holders:
            holder.release()
        if gate is not None:
            gate.remove()
            gate.close()

    assert period_end_result(conn, batch_id) == clean_period_end
    verify = monthend_cli(target, "verify", "--batch", str(batch_id), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
