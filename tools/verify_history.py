"""What audit verification costs as history grows, measured.

Builds one scratch database per history size on the server (migrated, with
the demo data tools), posts that many earlier batches of --txns rows each
and keeps a head by a full verification, then posts one new batch of --txns
rows. Then, alternating between the databases round by round, it verifies
the new batch incrementally (`monthend verify --since-head` on a copy of the
kept head, --no-record), and on the largest history a full verification with
--jobs 1 and --jobs N alternately. Each figure is the `seconds` the
verification reports (its checks, in its snapshot). The scratch databases are
dropped at the end (--keep leaves them). Never point it at a production
server: it creates databases.

    python tools/verify_history.py --txns 100000 --earlier 1 --earlier 8 \\
        --jobs 2 --rounds 3 --out docs/performance/verification/history.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from monthend import db

FIRST_YEAR = 2060


def cli(conninfo: str, *args: str) -> dict[str, Any] | None:
    proc = subprocess.run([sys.executable, "-m", "monthend.cli", "--dsn", conninfo, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"monthend {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return json.loads(proc.stdout) if "--json" in args else None


def period(index: int) -> str:
    return f"{FIRST_YEAR + index // 12}-{index % 12 + 1:02d}"


def build(admin: str, name: str, earlier: int, txns: int, head: Path) -> str:
    """A scratch database with ``earlier`` batches, a kept head, and one new batch."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conninfo = make_conninfo(admin, dbname=name)
    cli(conninfo, "migrate", "--with-demo-data-tools")
    for index in range(earlier + 1):
        if index == earlier:
            cli(conninfo, "verify", "--full", "--head-file", str(head), "--no-record")
        cli(conninfo, "generate", "--period", period(index), "--txns", str(txns), "--seed",
            str(index + 1))
        cli(conninfo, "run", "--period", period(index), "--workers", "2", "--json")
        print(f"{name}: batch {index + 1} of {earlier + 1} posted", file=sys.stderr)
    return conninfo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="server (default: DATABASE_URL, PG*, embedded cluster)")
    parser.add_argument("--txns", type=int, default=100_000)
    parser.add_argument("--earlier", type=int, action="append",
                        help="earlier batches in one database (repeat; default 1 and 8)")
    parser.add_argument("--jobs", type=int, default=2, help="sessions of the parallel full run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--out", type=Path, help="write the measurement document here")
    parser.add_argument("--machine", default=f"{platform.machine()}, {platform.node()}")
    args = parser.parse_args()
    histories = sorted(set(args.earlier or [1, 8]))
    target = db.resolve_target(args.dsn)
    db.ensure_started(target, announce=False)
    work = Path(tempfile.mkdtemp(prefix="verify-history-"))
    databases: dict[int, str] = {}
    try:
        for earlier in histories:
            databases[earlier] = build(target.conninfo, f"monthend_verify_history_{earlier}",
                                       earlier, args.txns, work / f"head-{earlier}.json")
        incremental: dict[int, list[float]] = {h: [] for h in histories}
        full: dict[int, list[float]] = {1: [], args.jobs: []}
        largest = histories[-1]
        for _ in range(args.rounds):
            for earlier in histories:
                head = work / f"round-{earlier}.json"
                shutil.copy(work / f"head-{earlier}.json", head)
                result = cli(databases[earlier], "verify", "--since-head", str(head),
                             "--no-record", "--json")
                assert result is not None and result["ok"] and \
                    len(result["batches_verified"]) == 1, result
                incremental[earlier].append(result["seconds"])
            for jobs in full:
                result = cli(databases[largest], "verify", "--full", "--jobs", str(jobs),
                             "--no-record", "--json")
                assert result is not None and result["ok"], result
                full[jobs].append(result["seconds"])
    finally:
        if not args.keep:
            with psycopg.connect(target.conninfo, autocommit=True) as conn:
                for name in (f"monthend_verify_history_{h}" for h in histories):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                        sql.Identifier(name)))
        shutil.rmtree(work, ignore_errors=True)

    def medians(runs: dict[int, list[float]]) -> dict[str, float]:
        return {str(k): round(statistics.median(v), 3) for k, v in runs.items()}

    inc = medians(incremental)
    ratio = round(inc[str(largest)] / inc[str(histories[0])], 3)
    result = {
        "txns_per_batch": args.txns, "rounds": args.rounds,
        "incremental_seconds": {str(k): v for k, v in incremental.items()},
        "incremental_median_seconds": inc,
        "incremental_ratio": ratio,
        "full_batches": largest + 1,
        "full_seconds_by_jobs": {str(k): v for k, v in full.items()},
        "full_median_seconds_by_jobs": medians(full),
    }
    document = {
        "command": " ".join(["python tools/verify_history.py", "--txns", str(args.txns),
                             *[f"--earlier {h}" for h in histories], "--jobs", str(args.jobs),
                             "--rounds", str(args.rounds)]),
        "measured_on": datetime.date.today().isoformat(),
        "machine": args.machine,
        "result": result,
    }
    text = json.dumps(document, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
