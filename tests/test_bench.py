"""`monthend bench`: every reported field, the scaling pass's batch cancelled and
the measured batch committed, the raw-write scratch tables dropped, and the
exit codes. No timing is asserted: the test cluster is shared and not durable."""

from __future__ import annotations

import json

import pytest

from conftest import monthend_cli
from monthend import bench
from test_run import assert_entries_complete_and_balanced, fail_range

BENCH_FIELDS = {
    "status", "error", "period", "period_choice", "txns", "bad_rows", "seed", "workers",
    "workers_opened",
    "range_size", "settings", "durable", "warnings", "generate_seconds", "generate",
    "batch_id", "batch_status", "source_rows", "posted_rows", "dead_letter_rows",
    "journal_entries", "journal_lines", "ranges", "digest", "end_to_end_seconds",
    "source_txns_per_second", "journal_entries_per_second", "journal_lines_per_second",
    "phase_seconds", "commit_seconds", "scaling", "scaling_detail", "raw_write_seconds",
    "ratio", "raw_write", "checkpoint_before_passes", "driver_peak_rss_mb", "targets",
    "wal_bytes", "wal_records", "wal_full_page_images", "wal_bytes_per_million_source_rows",
    "parallel_seconds", "serial_seconds", "serial_share", "validation_longest_piece",
    "policies", "book",
}
SETTINGS = {"server_version", "fsync", "synchronous_commit", "wal_level", "full_page_writes",
            "shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "jit",
            "cores"}
PHASES = {"preflight", "preflight_ranges", "allocation", "processing", "validation_pieces",
          "validation", "commit", "post_processing"}
# The requirements each figure is judged against, as the README states them.
REQUIREMENTS = {"source_txns_per_second": (">=", 50_000), "ratio": ("<=", 1.5),
                "serial_share": ("<=", 0.05),
                "commit_seconds": ("<=", 1.0), "driver_peak_rss_mb": ("<=", 100),
                "scaling": (">=", 1.4)}


def bench_json(target, *args: str, expect: int = 0) -> dict:
    proc = monthend_cli(target, "bench", "--json", *args, timeout=120)
    assert proc.returncode == expect, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def scratch_tables(conn) -> list[str]:
    return [r["relname"] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE 'bench\\_raw\\_%%'").fetchall()]


@pytest.mark.full
def test_bench_reports_every_field(target, conn):
    result = bench_json(target, "--txns", "20000", "--bad-rows", "0.01")
    assert result.keys() >= BENCH_FIELDS
    assert result["status"] == "OK" and result["error"] is None
    assert result["period"] == "2040-01"
    assert result["period_choice"] == "the first free period from 2040-01"

    # The test cluster runs with fsync off: reported, warned about, not refused.
    assert result["settings"].keys() == SETTINGS
    assert result["settings"]["fsync"] == "off"
    assert result["durable"] is False
    assert any("not durable" in w for w in result["warnings"])

    generated = result["generate"]
    assert generated["premium_rows"] + generated["claim_rows"] == 20000
    bad = generated["bad_rows"]
    assert 0 < bad < 20000
    assert result["generate_seconds"] > 0
    assert result["source_rows"] == 20000
    assert result["posted_rows"] == 20000 - bad
    assert result["dead_letter_rows"] == bad
    assert result["journal_entries"] == 3 * result["posted_rows"]
    assert result["journal_lines"] == 9 * result["posted_rows"]

    assert result["end_to_end_seconds"] > 0
    for rate in ("source_txns_per_second", "journal_entries_per_second",
                 "journal_lines_per_second"):
        assert result[rate] > 0
    assert set(result["phase_seconds"]) >= PHASES
    assert result["commit_seconds"] == result["phase_seconds"]["commit"]
    assert 0 < result["driver_peak_rss_mb"] < 1024
    # The run writes its ledger, so WAL; per million rows is that, scaled.
    assert result["wal_bytes"] > 0 and result["wal_records"] > 0
    assert result["wal_bytes_per_million_source_rows"] == round(
        result["wal_bytes"] / result["source_rows"] * 1e6)

    # Scaling: the 1-worker batch was cancelled, the W-worker batch committed.
    detail = result["scaling_detail"]
    assert detail["measured"] is True and "identical rows" in detail["compares"]
    assert detail["processing_seconds_1_worker"] > 0
    assert detail["processing_seconds_workers"] == result["phase_seconds"]["processing"]
    assert result["scaling"] > 0
    runs = {r["batch_id"]: r["status"] for r in conn.execute(
        "SELECT batch_id, status FROM batch.run WHERE period = %s", (result["period"],))}
    period_end = result["period_end"]
    assert runs == {detail["baseline_batch_id"]: "CANCELLED", result["batch_id"]: "COMMITTED",
                    period_end["batch_id"]: "COMMITTED"}
    # The period-end after the run: the UPR of the policies its premium is written on.
    assert period_end["status"] == "COMMITTED" and period_end["seconds"] > 0
    assert 0 < period_end["policies_with_upr"] <= period_end["policies_in_force"]
    assert period_end["journal_entries"] > 0 and period_end["policy_ranges"] >= 1
    assert detail["baseline_status"] == "CANCELLED"
    assert result["batch_status"] == "COMMITTED"

    # The reference copied exactly the batch's rows, in parallel, and left nothing.
    raw = result["raw_write"]
    assert raw["mode"] == "parallel" and raw["connections"] == 2
    assert (raw["headers"], raw["lines"]) == (result["journal_entries"],
                                              result["journal_lines"])
    assert raw["dropped"] is True
    assert result["raw_write_seconds"] > 0
    assert result["ratio"] > 0
    assert scratch_tables(conn) == []
    # Two workers: some of the run had both busy, never more than all of it.
    assert 0 < result["parallel_seconds"] < result["end_to_end_seconds"]
    assert result["serial_seconds"] == pytest.approx(
        result["end_to_end_seconds"] - result["parallel_seconds"], abs=0.002)
    assert 0 < result["serial_share"] < 1
    # The longest piece of the staging tables' preparation bounds that phase.
    piece = result["validation_longest_piece"]
    longest = conn.execute(
        "SELECT max(extract(epoch FROM finished_at - started_at)) AS s "
        "FROM batch.validation_piece WHERE batch_id = %s", (result["batch_id"],)).fetchone()
    assert piece["seconds"] == pytest.approx(float(longest["s"]), abs=0.001)
    assert piece["table"] in {"header", "line", "claim"} and piece["task"] in {"index", "count"}
    assert 0 < piece["seconds"] <= result["phase_seconds"]["validation_pieces"] + 0.001

    assert result["targets"].keys() == REQUIREMENTS.keys()
    for name, judged in result["targets"].items():
        comparison, threshold = REQUIREMENTS[name]
        assert judged["value"] == result[name]
        assert judged["target"] == f"{comparison} {threshold:g}"
        assert judged["met"] is (result[name] >= threshold if comparison == ">="
                                 else result[name] <= threshold), (name, judged)

    # The committed batch is an ordinary, verifiable one.
    numbers = conn.execute(
        "SELECT count(*) AS n, count(DISTINCT je_number) AS d, min(je_number) AS lo, "
        "max(je_number) AS hi FROM gl.journal_entry_header WHERE batch_id = %s",
        (result["batch_id"],)).fetchone()
    entries = result["journal_entries"]
    assert (numbers["n"], numbers["d"]) == (entries, entries)
    assert (numbers["lo"], numbers["hi"]) == ("2040-01-0000000001", f"2040-01-{entries:010d}")
    assert_entries_complete_and_balanced(conn)
    verify = monthend_cli(target, "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True


@pytest.mark.full
def test_bench_without_scaling_takes_the_next_free_period(target, conn):
    monthend_cli(target, "generate", "--period", "2040-01", "--txns", "10", check=True)
    result = bench_json(target, "--txns", "2000", "--workers", "1", "--no-scaling")
    assert result["period"] == "2040-02"
    assert result["scaling"] is None
    assert result["scaling_detail"]["measured"] is False
    assert result["targets"]["scaling"]["met"] is None
    assert result["raw_write"]["mode"] == "sequential"
    assert result["raw_write"]["connections"] == 1
    assert result["posted_rows"] == 2000
    assert [(r["kind"], r["status"]) for r in conn.execute(
        "SELECT kind, status FROM batch.run WHERE period = '2040-02' ORDER BY batch_id")] == [
        ("RUN", "COMMITTED"), ("PERIOD_END", "COMMITTED")]
    # The next benchmark's period first reverses this one's revaluation.
    result = bench_json(target, "--txns", "500", "--workers", "1", "--no-scaling")
    assert result["period"] == "2040-03" and result["period_end"]["status"] == "COMMITTED"
    assert [(r["kind"], r["reverses_batch_id"] is not None) for r in conn.execute(
        "SELECT kind, reverses_batch_id FROM batch.run WHERE period = '2040-03' "
        "ORDER BY batch_id")] == [("AUTO_REVERSAL", True), ("RUN", False),
                                  ("PERIOD_END", False)]
    assert scratch_tables(conn) == []

    # A period that is not fresh, or not a period, is bad usage.
    refused = bench_json(target, "--txns", "10", "--period", "2040-01", expect=2)
    assert refused["status"] == "FAILED"
    assert "period 2040-01 is not fresh" in refused["error"]
    proc = monthend_cli(target, "bench", "--txns", "10", "--period", "2040-13")
    assert proc.returncode == 2 and "YYYY-MM" in proc.stderr

    # The table, when not --json, names the sections and the targets.
    proc = monthend_cli(target, "bench", "--txns", "500", "--no-scaling")
    assert proc.returncode == 0, proc.stderr
    for text in ("run", "reference and ratio", "settings", ">= 50000", "<= 1.5"):
        assert text in proc.stdout
    assert "not durable" in proc.stderr


@pytest.mark.full
def test_bench_policies_written_the_month_before_by_a_posted_book(target, conn):
    # 2040-02 is free but 2040-01 is not: the book needs the month before free too.
    monthend_cli(target, "generate", "--period", "2040-01", "--txns", "10", check=True)
    result = bench_json(target, "--txns", "1000", "--workers", "1", "--no-scaling",
                        "--policies", "1500")
    assert result["period"] == "2040-03" and "book" in result["period_choice"]
    book, own = result["book"], result["generate"]["policies"]
    assert own == result["generate"]["premium_rows"] == 700
    assert book["period"] == "2040-02" and book["premium_rows"] == book["policies"] == 800
    assert book["txns"] == 1143 and book["policies_written"] == 1500
    assert [(r["period"], r["kind"], r["status"]) for r in conn.execute(
        "SELECT period, kind, status FROM batch.run WHERE period >= '2040-02' "
        "ORDER BY batch_id")] == [("2040-02", "RUN", "COMMITTED"), ("2040-03", "RUN", "COMMITTED"),
                                  ("2040-03", "PERIOD_END", "COMMITTED")]
    assert conn.execute("SELECT batch_id FROM batch.run WHERE period = '2040-02'"
                        ).fetchone()["batch_id"] == book["batch_id"]
    # The period-end finds the book's policies in force, with their posted premium.
    in_force = conn.execute(
        "SELECT count(*) AS n FROM subledger.policy "
        "WHERE inception_date <= date '2040-03-31' AND expiry_date > date '2040-03-31'"
        ).fetchone()["n"]
    assert result["period_end"]["policies_in_force"] == in_force > own
    assert conn.execute(
        "SELECT count(*) AS n FROM gl.upr_detail AS d JOIN subledger.premium_transaction AS p "
        "USING (policy_id) WHERE d.batch_id = %s AND p.payment_date < date '2040-03-01'",
        (result["period_end"]["batch_id"],)).fetchone()["n"] > 0

    # Enough of the period's own policies: no book.
    result = bench_json(target, "--txns", "500", "--workers", "1", "--no-scaling",
                        "--policies", "100")
    assert result["period"] == "2040-05"
    assert result["book"]["txns"] == 0 and result["book"]["batch_id"] is None
    # A given period whose previous month is not fresh is refused, saying why.
    refused = bench_json(target, "--txns", "10", "--period", "2040-06", "--policies", "20",
                         expect=2)
    assert "month before period 2040-06" in refused["error"]
    assert "2040-05" in refused["error"] and "leave out --policies" in refused["error"]


@pytest.mark.full
def test_failed_baseline_exits_1_and_leaves_nothing_behind(target, conn):
    fail_range(conn, 1, attempts_failing=None)
    result = bench_json(target, "--txns", "1000", expect=1)
    assert result["status"] == "FAILED"
    assert "injected failure in range 1" in result["error"]
    baseline = result["scaling_detail"]["baseline_batch_id"]
    # The baseline batch is cancelled, so it does not hold the period.
    assert [(r["batch_id"], r["status"]) for r in conn.execute(
        "SELECT batch_id, status FROM batch.run")] == [(baseline, "CANCELLED")]
    assert result["batch_id"] is None
    assert scratch_tables(conn) == []


@pytest.mark.parametrize(("value", "met"), [(None, None), (9.99, False), (10, True),
                                            (10.01, True)])
def test_a_target_at_least_is_met_from_its_threshold_up(monkeypatch, value, met):
    monkeypatch.setattr(bench, "TARGETS", (("speed", ">=", 10, "rows/s"),))
    result = {"speed": value}
    bench._judge(result)
    assert result["targets"] == {"speed": {"target": ">= 10", "value": value, "met": met,
                                           "measures": "rows/s"}}


@pytest.mark.parametrize(("value", "met"), [(None, None), (0.49, True), (0.5, True),
                                            (0.51, False)])
def test_a_target_at_most_is_met_up_to_its_threshold(monkeypatch, value, met):
    monkeypatch.setattr(bench, "TARGETS", (("seconds", "<=", 0.5, "commit, seconds"),))
    result = {"seconds": value}
    bench._judge(result)
    assert result["targets"]["seconds"]["met"] is met
    assert result["targets"]["seconds"]["target"] == "<= 0.5"
