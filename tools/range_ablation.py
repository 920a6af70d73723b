"""What one part of batch.process_range costs: the range with and without it.

A part of the range statement cannot be timed inside it (EXPLAIN ANALYZE's
per-node clocks inflate nodes that pass many rows), so this tool derives a
twin of the procedure from procedures/process_range.sql with one part taken
out, installs it as batch.process_range_without_<part>, and processes the
ranges of one batch in turn with the procedure and each twin, on one
connection. It prints each one's mean and median per range and what the part
costs, then cancels the batch (its rows are unposted again) and drops the
twins. Never run it against a production database.

Parts:
  seal           canonical text of every row, the entries' texts, leaf hashes and tree
                 (audit.range_root); the sort into entry order stays, the balance
                 check shares it
  balance_check  the per-entry debits = credits check (two window sums a row)
  digest_order   only line_no in the window's sort key (entries still grouped)

    python tools/range_ablation.py --period 2031-01 --txns 400000 --without seal
    python tools/range_ablation.py --period 2031-03 --txns 400000 --without seal --seal-version 1
    python tools/range_ablation.py --period 2031-02 --txns 600000 \\
        --without balance_check --without digest_order

The period must have no source rows and no batch yet: the tool generates them.
The first range of each procedure is a warm-up and is left out of the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from monthend import db

PROCEDURE_FILE = Path(__file__).resolve().parents[1] / "procedures" / "process_range.sql"


class ShapeChanged(SystemExit):
    def __init__(self, part: str) -> None:
        super().__init__(f"{PROCEDURE_FILE} no longer has the {part} where this tool looks for "
                         f"it; update without_{part}() to the procedure's new shape.")


def without_seal(source: str) -> str:
    """No canonical text, no entry texts, no leaf hashes, no tree. The sort
    into entry order stays: the per-entry balance check shares it."""
    twin, headers = re.subn(r",\s*audit\.canonical_header_text\([^)]*\) AS canonical", "", source)
    twin, lines = re.subn(r",\s*audit\.canonical_line_text_by_version\(.*?\) AS canonical", "",
                          twin, flags=re.S)
    twin, columns = re.subn(r"\b[hd]\.canonical,", "NULL::text,", twin)
    twin, texts = re.subn(r"string_agg\(x\.canonical, E'\\n'\) OVER entry AS entry_text,", "",
                          twin)
    twin, roots = re.subn(r"audit\.range_root\(.*?\) AS seal", "NULL::bytea AS seal", twin,
                          flags=re.S)
    if (headers, lines, columns, texts, roots) != (1, 1, 2, 1, 1):
        raise ShapeChanged("seal")
    # The RANGE_DONE audit row (batch.complete_range) stays: one row a range.
    return twin


def without_balance_check(source: str) -> str:
    twin, counted = re.subn(r"count\(\*\) FILTER \(WHERE e\.balance <> 0 OR "
                            r"e\.functional_balance <> 0\)", "0::bigint", source)
    twin, sums = re.subn(r"sum\(x\.debit - x\.credit\) OVER entry AS balance,\s*"
                         r"sum\(x\.functional_debit - x\.functional_credit\) OVER entry\s*"
                         r"AS functional_balance", "NULL::numeric AS balance", twin)
    if (counted, sums) != (1, 1):
        raise ShapeChanged("balance_check")
    return twin


def without_digest_order(source: str) -> str:
    twin, found = re.subn(r"PARTITION BY x\.je_id ORDER BY x\.line_no", "PARTITION BY x.je_id",
                          source)
    if found != 1:
        raise ShapeChanged("digest_order")
    return twin


PARTS: dict[str, Callable[[str], str]] = {
    "seal": without_seal,
    "balance_check": without_balance_check,
    "digest_order": without_digest_order,
}


def twin_of(source: str, part: str) -> str:
    """The procedure without one part, renamed, its GRANT left out."""
    twin = PARTS[part](source).replace("PROCEDURE batch.process_range(",
                                       f"PROCEDURE batch.process_range_without_{part}(")
    return twin[:twin.index("GRANT EXECUTE")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="database (default: DATABASE_URL, PG*, embedded cluster)")
    parser.add_argument("--period", required=True, help="an unused period, YYYY-MM")
    parser.add_argument("--txns", type=int, default=400_000)
    parser.add_argument("--range-size", type=int, default=10_000)
    parser.add_argument("--seal-version", type=int, choices=(1, 2),
                        help="seal the batch by this version (default: the current one)")
    parser.add_argument("--out", type=Path,
                        help="also write the figures as a measurement document here "
                             "(docs/performance/ablation/, rendered into docs/performance.md)")
    parser.add_argument("--machine", default=f"{platform.machine()}, {platform.node()}",
                        help="what it ran on, for --out")
    parser.add_argument("--without", action="append", choices=sorted(PARTS), required=True,
                        help="a part to take out (repeat for several twins)")
    args = parser.parse_args()
    parts = list(dict.fromkeys(args.without))
    names = ["process_range"] + [f"process_range_without_{p}" for p in parts]
    if args.txns < 2 * len(names) * args.range_size:
        print(f"--txns {args.txns} gives fewer than two ranges for each of {len(names)} "
              f"procedures; give at least {2 * len(names) * args.range_size}", file=sys.stderr)
        return 2

    source = PROCEDURE_FILE.read_text()
    twins = [twin_of(source, p) for p in parts]
    target = db.resolve_target(args.dsn)
    with db.connect(target) as conn:
        used = conn.execute("SELECT EXISTS (SELECT FROM batch.run WHERE period = %s) AS used",
                            (args.period,)).fetchone()
        if used["used"]:
            print(f"period {args.period} already has a batch; choose an unused period",
                  file=sys.stderr)
            return 2
        conn.execute("CALL subledger.generate_transactions(%s, %s, 0, 1, NULL, NULL, NULL)",
                     (args.period, args.txns))
        batch_id = conn.execute("CALL batch.start_run(%s, 1, %s, 3, NULL)",
                                (args.period, args.range_size)).fetchone()["p_batch_id"]
        if args.seal_version:
            conn.execute("UPDATE batch.run SET seal_version = %s WHERE batch_id = %s",
                         (args.seal_version, batch_id))
        conn.execute("CALL batch.preflight(%s)", (batch_id,))
        # Pre-flight's ranges, claimed and run on this connection.
        while (claim := conn.execute("CALL batch.claim_range(%s, 'range-ablation', NULL, NULL, "
                                     "NULL)", (batch_id,)).fetchone())["p_range_id"] is not None:
            conn.execute("CALL batch.process_range(%s)", (claim["p_range_id"],))
        conn.execute("CALL batch.allocate_ranges(%s)", (batch_id,))
        timings: dict[str, list[float]] = {name: [] for name in names}
        try:
            for twin in twins:
                conn.execute(twin)
            turn = 0
            while True:
                claim = conn.execute("CALL batch.claim_range(%s, 'range-ablation', NULL, NULL, "
                                     "NULL)", (batch_id,)).fetchone()
                range_id = claim["p_range_id"]
                if range_id is None:
                    break
                name = names[turn % len(names)]
                turn += 1
                started = time.perf_counter()
                conn.execute(f"CALL batch.{name}(%s)", (range_id,))
                timings[name].append(time.perf_counter() - started)
        finally:
            for name in names[1:]:
                conn.execute(f"DROP PROCEDURE IF EXISTS batch.{name}(bigint)")
            conn.execute("CALL batch.cancel_batch(%s)", (batch_id,))

    print(f"batch {batch_id}, {args.txns} rows, ranges of {args.range_size}, seal version "
          f"{args.seal_version or 'current'}, one connection, first range of each left out")
    full = statistics.mean(timings["process_range"][1:]) * 1000
    procedures = []
    for name in names:
        runs = timings[name][1:]
        mean = statistics.mean(runs) * 1000
        line = (f"  {name:38s} {len(runs):3d} ranges  mean {mean:7.1f} ms  "
                f"median {statistics.median(runs) * 1000:7.1f} ms")
        figures = {"procedure": name, "ranges": len(runs), "mean_ms": round(mean, 1),
                   "median_ms": round(statistics.median(runs) * 1000, 1),
                   "part_ms": None, "part_percent": None}
        if name != "process_range":
            line += f"  -> the part costs {full - mean:6.1f} ms, {100 * (full - mean) / full:4.1f}%"
            figures.update(part_ms=round(full - mean, 1),
                           part_percent=round(100 * (full - mean) / full, 1))
        procedures.append(figures)
        print(line)
    if args.out:
        command = ["python tools/range_ablation.py", "--period", args.period, "--txns",
                   str(args.txns), *(f"--without {p}" for p in parts)]
        if args.seal_version:
            command += ["--seal-version", str(args.seal_version)]
        document = {"command": " ".join(command),
                    "measured_on": datetime.date.today().isoformat(),
                    "machine": args.machine,
                    "result": {"batch_id": batch_id, "txns": args.txns,
                               "range_size": args.range_size,
                               "seal_version": args.seal_version or "current",
                               "procedures": procedures}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
