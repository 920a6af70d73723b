"""Faults under a reversal, as under a run: the driver killed mid-reversal, a
worker's backend terminated mid-range, the server stopped at the commit. Each ends,
after `monthend resume` where the reversal did not finish itself, in exactly the
ledger an uninterrupted reversal of the same data gives (digests included), with
the invariants of faults.check_invariants: balanced, gapless, at most one live
posting a source row."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli
from faults import (
    DEFAULT,
    batch_rows,
    batch_status,
    check_invariants,
    connect,
    fresh_database,
    gate,
    hold_lock,
    kill_process,
    ranges_by_status,
    restart,
    run_hold,
    start_cli,
    wait_for,
    wait_for_lock_wait,
    wait_until_held,
)
from ledger_fingerprint import ledger_fingerprint
from monthend import db, migrate

pytestmark = pytest.mark.full


def reverse_args(batch_id: int, method: str = "side") -> tuple[str, ...]:
    return ("reverse", str(batch_id), "--reason", "RULE_ERROR", "--method", method,
            "--workers", "2", "--range-size", str(DEFAULT.range_size), "--json")


def posted(target: db.Target) -> int:
    """The dataset generated and run: the batch a reversal will reverse."""
    DEFAULT.generate(target)
    result = json.loads(monthend_cli(target, *DEFAULT.run_args(), check=True).stdout)
    assert result["status"] == "COMMITTED"
    return result["batch_id"]


@pytest.fixture(scope="module")
def clean_reversal(postgresql_noproc: Any) -> dict[str, Any]:
    """The ledger an uninterrupted reversal of the posted dataset leaves."""
    with fresh_database(postgresql_noproc) as ref:
        batch_id = posted(ref)
        result = json.loads(monthend_cli(ref, *reverse_args(batch_id), check=True).stdout)
        assert result["status"] == "COMMITTED" and result["ranges_retried"] == 0, result
        with psycopg.connect(ref.conninfo, autocommit=True, row_factory=dict_row) as ref_conn:
            return ledger_fingerprint(ref_conn, DEFAULT.period)


def nothing_of(conn, reversal: int) -> bool:
    """None of the reversal is in the ledger: no row, no partition, no seal, and
    the period's numbers are still those of the batches committed before it
    (batch_rows counts the numbers beyond theirs)."""
    rows = batch_rows(conn, reversal)
    seals = conn.execute("SELECT count(*) AS n FROM audit.log WHERE event = 'BATCH_COMMITTED' "
                         "AND batch_id = %s", (reversal,)).fetchone()["n"]
    return ((rows["headers"], rows["lines"], rows["gl_partitions"], seals) == (0, 0, 0, 0)
            and rows["je_numbers_used"] == 0)


def resume(target: db.Target, batch_id: int) -> dict[str, Any]:
    proc = monthend_cli(target, "resume", str(batch_id), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert (result["status"], result["kind"]) == ("COMMITTED", "REVERSAL"), result
    return result


def test_driver_killed_mid_reversal_then_resumed(target, conn, clean_reversal) -> None:
    original = posted(target)
    conn.execute(f"ALTER DATABASE {conn.info.dbname} "
                 "SET client_connection_check_interval = '100ms'")
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *reverse_args(original))
        held = wait_until_held(conn, proc)
        reversal = held[0]["batch_id"]
        kill_process(proc)
        before = ranges_by_status(conn, reversal)
        assert before["DONE"] == [1] and before.get("PENDING")
        assert nothing_of(conn, reversal)
        the_gate.open()
        result = resume(target, reversal)
    assert result["reverses_batch_id"] == original
    check_invariants(conn, clean=clean_reversal)


def test_backend_terminated_mid_reversal_range_is_retried(target, conn,
                                                          clean_reversal) -> None:
    original = posted(target)
    with gate(target.conninfo) as the_gate:
        proc = start_cli(target, *reverse_args(original))
        victim = wait_until_held(conn, proc)[0]
        conn.execute("SELECT pg_terminate_backend(%s)", (victim["pid"],))
        wait_for(lambda: conn.execute(
            "SELECT 1 FROM batch.range WHERE range_id = %s AND last_error IS NOT NULL",
            (victim["range_id"],)).fetchone(), "the failed attempt to be recorded", proc=proc)
        the_gate.open()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    result = json.loads(out)
    assert result["status"] == "COMMITTED" and result["ranges_retried"] >= 1
    check_invariants(conn, clean=clean_reversal)


def stopped_at(private_cluster, target: db.Target, conn, original: int, point: str) -> int:
    """Start the reversal, hold it at ``point``, stop the server with -m immediate
    and kill the driver; return the reversal's batch id."""
    if point == "preflight":
        # Pre-flight writes the reversal's postings into batch.source_reversal.
        with hold_lock(target.conninfo, "LOCK TABLE batch.source_reversal IN SHARE MODE"):
            proc = start_cli(target, *reverse_args(original))
            wait_for_lock_wait(conn, "%batch.preflight%", proc)
            reversal = conn.execute("SELECT max(batch_id) AS b FROM batch.run").fetchone()["b"]
            private_cluster.stop("immediate")
            kill_process(proc)
        return reversal
    with run_hold(target.conninfo, conn, point) as hold:
        proc = start_cli(target, *reverse_args(original))
        reversal = hold.reach(proc)["batch_id"]
        private_cluster.stop("immediate")
        kill_process(proc)
    return reversal


@pytest.mark.parametrize("point", ["preflight", "commit_attach", "commit_seal"])
def test_server_stopped_during_a_reversal_phase(private_cluster, point) -> None:
    """`pg_ctl stop -m immediate` while the reversal waits inside a phase: nothing
    of it is in the ledger and the postings it reverses stay live; `monthend resume`
    then ends in the ledger of a clean reversal of the same data, made in a second
    database of the same cluster."""
    target = db.Target(private_cluster.dsn(), "--dsn")
    original = posted(target)
    conn = connect(target.conninfo)
    try:
        status = {"preflight": "STARTED", "commit_attach": "VALIDATED",
                  "commit_seal": "VALIDATED"}[point]
        reversal = stopped_at(private_cluster, target, conn, original, point)
        conn.close()
        restart(private_cluster)
        conn = connect(target.conninfo)
        assert batch_status(conn, reversal) == status
        assert nothing_of(conn, reversal)
        reversed_rows = conn.execute("SELECT count(*) AS n FROM batch.source_reversal "
                                     "WHERE batch_id = %s", (reversal,)).fetchone()["n"]
        assert (reversed_rows == 0) == (point == "preflight")
        check_invariants(conn, finished=False)
        resume(target, reversal)
    finally:
        conn.close()

    with psycopg.connect(private_cluster.dsn("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE clean_reversal")
    reference = db.Target(private_cluster.dsn("clean_reversal"), "--dsn")
    with psycopg.connect(reference.conninfo, autocommit=True) as ref_conn:
        migrate.apply(ref_conn, with_demo_tools=True)
    monthend_cli(reference, *reverse_args(posted(reference)), check=True)
    with connect(reference.conninfo) as ref_conn:
        clean = ledger_fingerprint(ref_conn, DEFAULT.period, with_ids=False)
    with connect(target.conninfo) as conn:
        check_invariants(conn, clean=clean, with_ids=False)
