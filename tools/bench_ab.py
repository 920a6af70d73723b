"""The benchmark of two checkouts (or worker counts) in one sitting, alternated.

The machine this runs on is shared and its speed drifts over minutes, so a
comparison of two versions of monthend (or of one version at several worker
counts) is only fair when the runs alternate: round 1 runs every variant once,
round 2 again, and so on. Each run gets a fresh database cloned from a
template its own checkout migrated (so every run starts from the same state),
runs `monthend bench --no-scaling --json` of that checkout, and is dropped
after. The result is one JSON document: every run's end to end, raw write,
ratio, serial share and phases, with the commit each checkout was at.

    git worktree add /tmp/monthend-old <previous commit>
    python tools/bench_ab.py --server "host=127.0.0.1 port=54329 user=postgres" \\
        --variant old=/tmp/monthend-old:2 --variant new=.:2 --variant new=.:8 \\
        --variant new=.:100 --txns 1000000 --rounds 2 --server-cores 2 \\
        --out docs/performance/parallel/ab-1m.json

A variant is NAME=CHECKOUT:WORKERS. Never run it against a production server:
it creates and drops databases named monthend_ab_*.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

FIELDS = ("status", "workers", "workers_opened", "end_to_end_seconds", "raw_write_seconds",
          "ratio", "parallel_seconds", "serial_seconds", "serial_share", "phase_seconds",
          "source_rows", "journal_lines", "wal_bytes")


def monthend(checkout: Path, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PYTHONPATH"] = str(checkout / "driver")
    return subprocess.run([sys.executable, "-m", "monthend.cli", "--dsn", dsn, *args],
                          capture_output=True, text=True, env=env, cwd=checkout, check=False,
                          stdin=subprocess.DEVNULL)


def commit_of(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


def admin(server: str, *statements: str) -> None:
    with psycopg.connect(f"{server} dbname=postgres", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True,
                        help="libpq connection string of the server, without dbname")
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=CHECKOUT:WORKERS, in the order each round runs them")
    parser.add_argument("--txns", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server-cores", type=int, default=None,
                        help="gl.setting.server_cores of every database")
    parser.add_argument("--machine", default=f"{os.cpu_count()} cores, {platform.system()}")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    variants = []
    for spec in args.variant:
        name, rest = spec.split("=", 1)
        checkout, workers = rest.rsplit(":", 1)
        variants.append((name, Path(checkout).resolve(), int(workers)))
    checkouts = {name: path for name, path, _ in variants}
    templates = {name: f"monthend_ab_{name}_tpl" for name in checkouts}
    for name, checkout in checkouts.items():
        admin(args.server, f"DROP DATABASE IF EXISTS {templates[name]}",
              f"CREATE DATABASE {templates[name]}")
        proc = monthend(checkout, f"{args.server} dbname={templates[name]}", "migrate",
                        "--with-demo-data-tools")
        if proc.returncode != 0:
            raise SystemExit(f"{name}: migrate failed:\n{proc.stderr}")
        if args.server_cores:
            with psycopg.connect(f"{args.server} dbname={templates[name]}",
                                 autocommit=True) as conn:
                conn.execute("UPDATE gl.setting SET server_cores = %s", (args.server_cores,))

    runs: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        for name, checkout, workers in variants:
            database = "monthend_ab_run"
            admin(args.server, f"DROP DATABASE IF EXISTS {database}",
                  f"CREATE DATABASE {database} TEMPLATE {templates[name]}")
            proc = monthend(checkout, f"{args.server} dbname={database}", "bench", "--txns",
                            str(args.txns), "--workers", str(workers), "--no-scaling", "--json")
            try:
                result = json.loads(proc.stdout)
            except json.JSONDecodeError:
                raise SystemExit(f"{name} ({workers} workers), round {round_no}: bench exited "
                                 f"{proc.returncode}:\n{proc.stderr}") from None
            run = {"variant": name, "commit": commit_of(checkout), "round": round_no,
                   **{field: result.get(field) for field in FIELDS}}
            runs.append(run)
            print(json.dumps({k: run[k] for k in ("variant", "workers", "round",
                                                  "end_to_end_seconds", "ratio",
                                                  "serial_share")}), flush=True)
            admin(args.server, f"DROP DATABASE IF EXISTS {database}")
    admin(args.server, *(f"DROP DATABASE IF EXISTS {t}" for t in templates.values()))

    command = ("python tools/bench_ab.py " + " ".join(f"--variant {v}" for v in args.variant)
               + f" --txns {args.txns} --rounds {args.rounds}"
               + (f" --server-cores {args.server_cores}" if args.server_cores else ""))
    document = {"command": command, "measured_on": datetime.date.today().isoformat(),
                "machine": args.machine, "txns": args.txns, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
