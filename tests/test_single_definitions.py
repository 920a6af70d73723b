"""Rules with one definition each: the je_number format (gl.format_je_number), the
advisory-lock keys (batch.lock_key), and a range's journal lines
(batch.range_journal_line, used by both the posting and the verification)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from conftest import repo_root

SQL_FOLDERS = ("sql", "procedures", "audit", "partitions")


def sql_files() -> list[Path]:
    root = repo_root()
    return sorted(p for folder in SQL_FOLDERS for p in (root / folder).rglob("*")
                  if p.is_file() and p.suffix in (".sql", ".j2"))


def offending_lines(pattern: str, allowed: set[str]) -> list[str]:
    root = repo_root()
    found = []
    for path in sql_files():
        name = path.relative_to(root).as_posix()
        if name in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("--"):
                found.append(f"{name}:{number}: {line.strip()}")
    return found


def test_je_number_is_formatted_in_one_place() -> None:
    assert offending_lines(r"FM0+'|to_char\([^)]*je_n", {"sql/functions/format_je_number.sql"}) \
        == []


def test_every_advisory_lock_takes_its_key_from_lock_key() -> None:
    # Every pg_advisory_* call's argument starts with batch.lock_key / period_lock_key.
    calls = offending_lines(r"pg_advisory_\w+\((?!batch\.(lock_key|period_lock_key)\()", set())
    assert calls == []


def test_the_checker_would_see_a_literal_key(tmp_path: Path) -> None:
    line = "    PERFORM pg_advisory_xact_lock(1836938357, p_batch_id::integer);"
    assert re.search(r"pg_advisory_\w+\((?!batch\.(lock_key|period_lock_key)\()", line)
    line = "    PERFORM pg_advisory_xact_lock(batch.lock_key('alert_evaluation', p_batch_id));"
    assert not re.search(r"pg_advisory_\w+\((?!batch\.(lock_key|period_lock_key)\()", line)


def test_format_je_number(conn: psycopg.Connection) -> None:
    rows = conn.execute("SELECT gl.format_je_number('2025-01', 1) AS a, "
                        "gl.format_je_number('2025-12', 1234567890) AS b").fetchone()
    assert rows == {"a": "2025-01-0000000001", "b": "2025-12-1234567890"}


def test_format_je_number_is_inlined(conn: psycopg.Connection) -> None:
    """The planner replaces the call by its expression: no per-row function call."""
    plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT gl.format_je_number(g::text, g) "
        "FROM generate_series(1, 3) AS g").fetchall())
    assert "format_je_number" not in plan
    assert "to_char" in plan


def test_range_journal_line_is_inlined(conn: psycopg.Connection) -> None:
    """Inlined into the caller's statement, so the range's bounds reach the scans."""
    plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM batch.range_journal_line("
        "1, '2025-01', '2025-01', 'PREMIUM', 10, 20, 0, 0)").fetchall())
    assert "Function Scan" not in plan
    assert "c.je_offset" in plan  # the body's own columns, planned in place


def test_lock_key_layout(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT batch.lock_key('range_claim', 5) AS range_claim, "
        "       batch.lock_key('period', 202501) AS period, "
        "       batch.lock_key('alert_evaluation', 1099511627775) AS alerts, "
        "       batch.period_lock_key('2025-01') AS period_key").fetchone()
    assert row["range_claim"] == 0x6D6E_01_0000000005
    assert row["period"] == 0x6D6E_02_0000031705
    assert row["alerts"] == 0x6D6E_03_FFFFFFFFFF
    assert row["period_key"] == row["period"]


@pytest.mark.parametrize(("call", "message"), [
    ("batch.lock_key('ranges', 1)", "unknown advisory lock class 'ranges'"),
    ("batch.lock_key('range_claim', NULL)", "advisory lock id NULL of class range_claim"),
    ("batch.lock_key('range_claim', 1099511627776)", "is outside 0 .. 2^40 - 1"),
    ("batch.period_lock_key('2025-13')", "period 2025-13 is not of the form YYYY-MM"),
])
def test_lock_key_refuses_what_it_cannot_name(conn: psycopg.Connection, call: str,
                                              message: str) -> None:
    with pytest.raises(errors.InvalidParameterValue, match=re.escape(message)):
        conn.execute(f"SELECT {call}")


def test_a_range_claim_is_seen_under_its_key(conn: psycopg.Connection,
                                             target) -> None:
    """range_claim_held decodes the bigint key as pg_locks shows it."""
    with psycopg.connect(target.conninfo, autocommit=True) as holder:
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert not conn.execute("SELECT batch.range_claim_held(42) AS h").fetchone()["h"]
        holder.execute("SELECT pg_advisory_lock(batch.lock_key('range_claim', 42))")
        assert conn.execute("SELECT batch.range_claim_held(42, %s) AS h",
                            (pid,)).fetchone()["h"]
        assert not conn.execute("SELECT batch.range_claim_held(43) AS h").fetchone()["h"]
        assert not conn.execute("SELECT batch.range_claim_held(42, %s) AS h",
                                (pid + 1,)).fetchone()["h"]
        holder.execute("SELECT pg_advisory_unlock_all()")
        assert not conn.execute("SELECT batch.range_claim_held(42) AS h").fetchone()["h"]
