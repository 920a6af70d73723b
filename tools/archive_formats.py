"""Measure what an archive of a period costs, and what the alternatives would.

On a permanently closed period already posted (``--period``), in rounds that
alternate the variants, each on the same rows:

- ``copy``: a plain ``COPY (SELECT …) TO STDOUT (FORMAT csv)`` of the ledger's
  two files' rows, written uncompressed: the reference the archive is
  compared with; ``copy_unsorted`` the same without the ORDER BY;
- ``archive-gzN``: monthend's archive writer (every file of the period,
  sorted, gzip level N, hashed), in a process of its own whose peak RSS is
  taken (``getrusage``), then ``monthend verify --archive`` of it;
- ``parquet``: the same two ledger queries written as Parquet (zstd) by
  pyarrow, when ``--parquet-python`` names an interpreter that has pyarrow
  and psycopg (pyarrow is not a dependency of monthend: measured only).

Nothing is let go: the period stays as it is. Figures go to ``--out``
(JSON), rendered into docs/performance.md by tools/render_performance.py.

    python tools/archive_formats.py --dsn "host=… dbname=…" --period 2025-01 \\
        --rounds 2 --parquet-python /path/to/venv/bin/python \\
        --out docs/performance/archive/formats.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from monthend import archive_files

LEDGER = ("journal_entry_header", "journal_entry_line")

_WRITER = """
import json, resource, sys, time
from pathlib import Path
from monthend import archive, db
started = time.monotonic()
manifest = archive.write_archive(db.Target(sys.argv[1], "--dsn"), sys.argv[2], Path(sys.argv[3]),
                                 level=int(sys.argv[4]))
print(json.dumps({"seconds": time.monotonic() - started,
                  "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "files": {f["name"]: {"rows": f["rows"], "bytes": f["bytes"]}
                            for f in manifest["files"]}}))
"""

_PARQUET = """
import io, json, os, resource, sys, time
import psycopg
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

class Stream(io.RawIOBase):
    def __init__(self, chunks):
        self.chunks, self.rest = chunks, b""
    def readable(self):
        return True
    def readinto(self, b):
        while not self.rest:
            try:
                self.rest = bytes(next(self.chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self.rest))
        b[:n], self.rest = self.rest[:n], self.rest[n:]
        return n

dsn, out = sys.argv[1], sys.argv[2]
queries = json.loads(sys.argv[3])
started, sizes = time.monotonic(), {}
with psycopg.connect(dsn) as conn:
    conn.execute("SET DateStyle = 'ISO, YMD'")
    conn.execute("SET work_mem = '256MB'")
    for name, query in queries.items():
        cur = conn.cursor()
        with cur.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
            reader = pacsv.open_csv(io.BufferedReader(Stream(iter(copy)), 1 << 20),
                                    convert_options=pacsv.ConvertOptions(
                                        strings_can_be_null=True))
            path = f"{out}/{name}.parquet"
            with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
        sizes[name] = os.path.getsize(path)
print(json.dumps({"seconds": time.monotonic() - started, "bytes": sizes,
                  "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def ledger_queries(conn: psycopg.Connection, period: str, ordered: bool = True) -> dict[str, str]:
    row = conn.execute("SELECT start_date, end_date FROM gl.accounting_period WHERE period = %s",
                       (period,)).fetchone()
    params = {"period": period, "start": row[0], "end": row[1], "head_seq": 0}
    literal = psycopg.ClientCursor(conn)
    result = {}
    for stem in LEDGER:
        query = literal.mogrify(archive_files.FILE_BY_STEM[stem].select, params)
        result[stem] = query if ordered else query[:query.rindex(" ORDER BY")]
    return result


def plain_copy(dsn: str, queries: dict[str, str], directory: Path) -> dict[str, Any]:
    started, sizes = time.monotonic(), {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET work_mem = '256MB'")
        for name, query in queries.items():
            path = directory / f"{name}.csv"
            with path.open("wb") as out, conn.cursor().copy(
                    f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
                for chunk in copy:
                    out.write(chunk)
            sizes[name] = path.stat().st_size
    return {"seconds": time.monotonic() - started, "bytes": sizes}


def run_json(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--period", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--levels", default="1,6", help="gzip levels to measure")
    parser.add_argument("--parquet-python", default=None)
    parser.add_argument("--scratch", type=Path, default=None,
                        help="where the files are written (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="archive-formats-", dir=args.scratch))
    with psycopg.connect(args.dsn) as conn:
        ordered, unordered = (ledger_queries(conn, args.period, o) for o in (True, False))
        counts = {stem: conn.execute(f"SELECT count(*) FROM ({q}) AS x").fetchone()[0]
                  for stem, q in unordered.items()}
        source_rows = conn.execute("SELECT sum(claimed_rows) FROM batch.run WHERE period = %s "
                                   "AND status = 'COMMITTED'", (args.period,)).fetchone()[0]
    variants = ["copy", "copy_unsorted"] + [f"archive-gz{n}" for n in args.levels.split(",")]
    if args.parquet_python:
        variants.append("parquet")
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        for variant in variants if round_no % 2 == 0 else list(reversed(variants)):
            directory = scratch / f"{variant}-{round_no}"
            directory.mkdir()
            if variant == "copy":
                sample = plain_copy(args.dsn, ordered, directory)
            elif variant == "copy_unsorted":
                sample = plain_copy(args.dsn, unordered, directory)
            elif variant == "parquet":
                sample = run_json([args.parquet_python, "-c", _PARQUET, args.dsn, str(directory),
                                   json.dumps(ordered)])
            else:
                level = variant.removeprefix("archive-gz")
                sample = run_json([sys.executable, "-c", _WRITER, args.dsn, args.period,
                                   str(directory), level])
                started = time.monotonic()
                subprocess.run([sys.executable, "-m", "monthend.cli", "verify", "--archive",
                                str(directory), "--json"], capture_output=True, check=True)
                sample["verify_seconds"] = time.monotonic() - started
                sample["bytes"] = {n: f["bytes"] for n, f in sample.pop("files").items()}
            sample["total_bytes"] = sum(sample["bytes"].values())
            samples[variant].append(sample)
            print(f"round {round_no + 1} {variant}: {sample['seconds']:.1f} s, "
                  f"{sample['total_bytes'] / 1e6:.1f} MB", file=sys.stderr)
            shutil.rmtree(directory)
    shutil.rmtree(scratch)
    shown = [a if not a.startswith(("host=", "postgres")) else "DSN" for a in sys.argv[1:]]
    result = {"command": " ".join(["python", "tools/archive_formats.py", *shown]),
              "measured_on": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.node()}, {os.cpu_count()} cores",
              "result": {"period": args.period, "source_rows": source_rows,
                         "ledger_rows": counts, "rounds": args.rounds, "variants": samples}}
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
