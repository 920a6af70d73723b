"""Measure what the batch seal costs the range work: sealed versus unsealed.

The seal (canonical text of every header and line, sha256 per range, the
RANGE_DONE audit row) is computed inside batch.process_range, so its cost
cannot be read off a run. This tool derives an unsealed twin of that
procedure from procedures/process_range.sql (the same statement without the
canonical text, the digest and the audit row), installs it as
batch.process_range_unsealed, and processes the ranges of one batch
alternately with each, on one connection. It prints the mean of each and the
seal's share, then cancels the batch (its rows are unposted again) and drops
the twin. Never run it against a production database.

    python tools/seal_share.py --period 2031-01 --txns 400000 [--dsn DSN]

The period must have no source rows and no batch yet: the tool generates them.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

from monthend import db

PROCEDURE_FILE = Path(__file__).resolve().parents[1] / "procedures" / "process_range.sql"


def unsealed_twin(source: str) -> str:
    """process_range without the seal; raises when the procedure no longer has its shape."""
    twin = source.replace("PROCEDURE batch.process_range(",
                          "PROCEDURE batch.process_range_unsealed(")
    twin, headers = re.subn(r",\s*audit\.canonical_header_text\([^)]*\) AS canonical", "", twin)
    twin, lines = re.subn(r",\s*audit\.canonical_line_text\([^)]*\) AS canonical", "", twin)
    start = twin.find("(SELECT sha256(")
    end = twin.find("AS x)", start) + len("AS x)")
    audit = twin.find("PERFORM audit.append('RANGE_DONE'")
    if headers != 1 or lines != 1 or start < 0 or end < start or audit < 0:
        raise SystemExit(f"{PROCEDURE_FILE} no longer has the seal where this tool looks for it; "
                         "update unsealed_twin() to the procedure's new shape.")
    twin = twin[:start] + "NULL::bytea" + twin[end:]
    audit = twin.find("PERFORM audit.append('RANGE_DONE'")
    close = twin.find("));", audit)
    twin = twin[:audit] + "PERFORM 1 WHERE false AND " + twin[audit + 8:close + 2] \
        + " IS NOT NULL" + twin[close + 2:]
    return twin[:twin.index("GRANT EXECUTE")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="database (default: DATABASE_URL, PG*, embedded cluster)")
    parser.add_argument("--period", required=True, help="an unused period, YYYY-MM")
    parser.add_argument("--txns", type=int, default=400_000)
    parser.add_argument("--range-size", type=int, default=10_000)
    args = parser.parse_args()

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
        conn.execute("CALL batch.preflight(%s)", (batch_id,))
        conn.execute("CALL batch.allocate_ranges(%s)", (batch_id,))
        conn.execute(unsealed_twin(PROCEDURE_FILE.read_text()))
        timings: dict[str, list[float]] = {"process_range": [], "process_range_unsealed": []}
        try:
            turn = 0
            while True:
                claim = conn.execute("CALL batch.claim_range(%s, 'seal-share', NULL, NULL, NULL)",
                                     (batch_id,)).fetchone()
                range_id = claim["p_range_id"]
                if range_id is None:
                    break
                name = "process_range" if turn % 2 == 0 else "process_range_unsealed"
                turn += 1
                started = time.perf_counter()
                conn.execute(f"CALL batch.{name}(%s)", (range_id,))
                timings[name].append(time.perf_counter() - started)
        finally:
            conn.execute("DROP PROCEDURE IF EXISTS batch.process_range_unsealed(bigint)")
            conn.execute("CALL batch.cancel_batch(%s)", (batch_id,))
    sealed = statistics.mean(timings["process_range"]) * 1000
    unsealed = statistics.mean(timings["process_range_unsealed"]) * 1000
    print(f"batch {batch_id}, {args.txns} rows, ranges of {args.range_size}: "
          f"sealed {sealed:.1f} ms per range ({len(timings['process_range'])} ranges), "
          f"unsealed {unsealed:.1f} ms ({len(timings['process_range_unsealed'])} ranges); "
          f"the seal is {100 * (sealed - unsealed) / sealed:.1f}% of a range's work and adds "
          f"{100 * (sealed - unsealed) / unsealed:.1f}% to it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
