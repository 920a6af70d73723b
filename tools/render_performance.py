"""Render the measured figures of docs/performance.md from docs/performance/*.json.

Each JSON file is one measured configuration, replaced when it is measured again:

    {"command": "monthend bench --txns 1000000 --workers 2 --json",
     "measured_on": "YYYY-MM-DD",
     "machine": "what it ran on",
     "result": <the document `monthend bench --json` printed>}

The tables go between the marker comments BEGIN and END of docs/performance.md;
everything else on the page is left as it is. A figure lives in its JSON file
only: tests/test_docs_links.py fails when the page is not what this renders.

    python tools/render_performance.py           # rewrite the section
    python tools/render_performance.py --check   # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "performance.md"
DATA = ROOT / "docs" / "performance"
BEGIN = "<!-- BEGIN measured -->"
END = "<!-- END measured -->"
PHASES = ("preflight", "preflight_ranges", "allocation", "processing", "validation_pieces",
          "validation", "commit", "post_processing")
# The phases the batch's workers run side by side; the others run on one backend.
PARALLEL_PHASES = ("preflight_ranges", "processing", "validation_pieces")


def _book_policies(result: dict[str, Any]) -> str | None:
    """Policies written by the period's end, and how many of them the book wrote."""
    book = result.get("book")
    if not book:
        return None
    return f"{book['policies_written']:,} ({book['policies'] or 0:,})"


def load_measurements(directory: Path = DATA) -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) of every measurement, largest volume first."""
    found = []
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        missing = {"command", "measured_on", "machine", "result"} - set(document)
        if missing:
            raise SystemExit(f"{path}: missing {', '.join(sorted(missing))}")
        found.append((path.name, document))
    found.sort(key=lambda item: (-_number(item[1]["result"].get("txns")),
                                 _number(item[1]["result"].get("workers")), item[0]))
    return found


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _fmt(value: Any, digits: int | None = None) -> str:
    """A figure as the JSON has it; thousands separated; '-' when not measured."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if digits is None:
        digits = 0 if number == int(number) else len(str(value).split(".")[-1])
    return f"{number:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_section(measurements: list[tuple[str, dict[str, Any]]]) -> str:
    """The markdown between the markers (without them)."""
    if not measurements:
        return "No measurement is kept yet: run the benchmark and add its JSON."
    names = [f"[{name.removesuffix('.json')}](performance/{name})" for name, _ in measurements]
    results = [document["result"] for _, document in measurements]
    out: list[str] = []

    out += _table(["", *names], [
        ["measured on", *[document["measured_on"] for _, document in measurements]],
        ["command", *[f"`{document['command']}`" for _, document in measurements]],
        ["machine", *[document["machine"] for _, document in measurements]],
        ["status", *[str(r.get("status")) for r in results]],
        ["durable settings", *[_fmt(r.get("durable")) for r in results]],
    ])
    out.append("")

    def row(label: str, pick: Any, digits: int | None = None) -> list[str]:
        return [label, *[_fmt(pick(r), digits) for r in results]]

    rows = [
        row("source transactions", lambda r: r.get("source_rows")),
        row("journal entries", lambda r: r.get("journal_entries")),
        row("journal lines", lambda r: r.get("journal_lines")),
        row("ranges", lambda r: r.get("ranges")),
        row("workers", lambda r: r.get("workers")),
        row("workers opened", lambda r: r.get("workers_opened")),
        row("end to end, s", lambda r: r.get("end_to_end_seconds")),
        row("source transactions/s", lambda r: r.get("source_txns_per_second"), 0),
        row("journal lines/s", lambda r: r.get("journal_lines_per_second"), 0),
    ]
    rows += [row(f"phase: {phase.replace('_', '-')}, s",
                 lambda r, p=phase: (r.get("phase_seconds") or {}).get(p))
             for phase in PHASES]
    rows += [
        row("processing with 1 worker, s",
            lambda r: (r.get("scaling_detail") or {}).get("processing_seconds_1_worker")),
        row("scaling (1 worker / W workers)", lambda r: r.get("scaling")),
        row("serial part (fewer than two backends busy), s", lambda r: r.get("serial_seconds")),
        row("serial share of end to end", lambda r: r.get("serial_share")),
        row("raw-write reference, s", lambda r: r.get("raw_write_seconds")),
        row("ratio (end to end / raw write)", lambda r: r.get("ratio")),
        row("driver peak RSS, MB", lambda r: r.get("driver_peak_rss_mb")),
        row("generation, s (not in end to end)", lambda r: r.get("generate_seconds")),
        row("period-end: policies written (the book's, the month before)",
            lambda r: _book_policies(r)),
        row("period-end: policies in force", lambda r: (r.get("period_end") or {}).get(
            "policies_in_force")),
        row("period-end: UPR rows (policy, currency)", lambda r: (r.get("period_end") or {}).get(
            "upr_rows")),
        row("period-end: entries", lambda r: (r.get("period_end") or {}).get("journal_entries")),
        row("period-end: start to post-processed, s", lambda r: (r.get("period_end") or {}).get(
            "seconds")),
        *[row(f"period-end phase: {phase.replace('_', '-')}, s",
              lambda r, p=phase: ((r.get("period_end") or {}).get("phase_seconds") or {}).get(p))
          for phase in ("preflight", "preflight_ranges", "allocation", "processing",
                        "validation", "commit")],
    ]
    out += _table(["figure", *names], rows)
    out.append("")

    fields: list[str] = []
    for result in results:
        fields += [f for f in (result.get("targets") or {}) if f not in fields]
    target_rows = []
    for field in fields:
        known = [r["targets"][field] for r in results if field in (r.get("targets") or {})]
        cells = []
        for result in results:
            # The value itself is in the table above: a figure is shown once.
            judged = (result.get("targets") or {}).get(field) or {}
            cells.append({True: "met", False: "**missed**"}.get(judged.get("met"), "-"))
        target_rows.append([known[0].get("measures", field), f"`{known[0]['target']}`", *cells])
    out += _table(["target", "wanted", *names], target_rows)
    return "\n".join(out)


def _documents(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(path.stem, json.loads(path.read_text(encoding="utf-8")))
            for path in sorted(directory.glob("*.json"))]


def _source(kind: str, name: str, document: dict[str, Any]) -> str:
    return (f"[{name}](performance/{kind}/{name}.json), measured on "
            f"{document['measured_on']} ({document['machine']}): `{document['command']}`")


def render_verification(documents: list[tuple[str, dict[str, Any]]]) -> str:
    """Audit verification against history (tools/verify_history.py)."""
    out: list[str] = []
    for name, document in documents:
        r = document["result"]
        inc = r["incremental_median_seconds"]
        full = r["full_median_seconds_by_jobs"]
        out.append(_source("verification", name, document))
        out.append("")
        rows = [[f"incremental, one new batch of {r['txns_per_batch']:,} rows, "
                 f"{k} earlier batch(es)", _fmt(v), ", ".join(_fmt(x) for x in
                                                              r["incremental_seconds"][k])]
                for k, v in inc.items()]
        rows.append(["incremental: most history / least history", _fmt(r["incremental_ratio"]),
                     ""])
        rows += [[f"full, {r['full_batches']} batches, --jobs {k}", _fmt(v),
                  ", ".join(_fmt(x) for x in r["full_seconds_by_jobs"][k])]
                 for k, v in full.items()]
        out += _table(["verification", "median, s", f"{r['rounds']} rounds, s"], rows)
        out.append("")
    return "\n".join(out).rstrip("\n")


def render_ablation(documents: list[tuple[str, dict[str, Any]]]) -> str:
    """What parts of a range cost (tools/range_ablation.py --out)."""
    out: list[str] = []
    for name, document in documents:
        r = document["result"]
        out.append(_source("ablation", name, document))
        out.append("")
        rows = [[p["procedure"], str(p["ranges"]), _fmt(p["mean_ms"], 1), _fmt(p["median_ms"], 1),
                 "" if p.get("part_ms") is None else f"{_fmt(p['part_ms'], 1)} ms, "
                 f"{_fmt(p['part_percent'], 1)}%"]
                for p in r["procedures"]]
        out += _table(["procedure", "ranges", "mean, ms", "median, ms", "the part costs"], rows)
        out.append("")
    return "\n".join(out).rstrip("\n")


def render_archive(documents: list[tuple[str, dict[str, Any]]]) -> str:
    """What an archive costs against a plain COPY and Parquet (tools/archive_formats.py)."""
    out: list[str] = []
    for name, document in documents:
        r = document["result"]
        out.append(_source("archive", name, document))
        out.append("")
        out.append(f"Period of {_fmt(r['source_rows'])} source rows: "
                   + ", ".join(f"{_fmt(n)} {t} rows" for t, n in r["ledger_rows"].items())
                   + f"; medians of {r['rounds']} rounds, the variants alternated.")
        out.append("")
        variants = r["variants"]

        def median(values: list[float]) -> float:
            ordered = sorted(values)
            mid = len(ordered) // 2
            return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

        copy_seconds = median([x["seconds"] for x in variants["copy"]])
        rows = []
        for variant, samples in variants.items():
            seconds = median([x["seconds"] for x in samples])
            rss = [x["max_rss_kb"] for x in samples if "max_rss_kb" in x]
            verify = [x["verify_seconds"] for x in samples if "verify_seconds" in x]
            ledger = sum(samples[0]["bytes"].get(f"{t}{suffix}", 0)
                         for t in r["ledger_rows"] for suffix in ("", ".csv.gz"))
            rows.append([variant, _fmt(seconds, 1), _fmt(seconds / copy_seconds, 2),
                         _fmt(ledger / 1e6, 1), _fmt(samples[0]["total_bytes"] / 1e6, 1),
                         _fmt(max(rss) / 1024, 0) if rss else "-",
                         _fmt(median(verify), 1) if verify else "-"])
        out += _table(["variant", "seconds", "to plain COPY", "ledger files, MB", "all files, MB",
                       "peak RSS, MB", "verify --archive, s"], rows)
        out.append("")
    return "\n".join(out).rstrip("\n")


# The projection's machine: the requirements' database server.
PROJECTED_CORES = 32
PROJECTED_ROWS = (10_000_000, 50_000_000)


def render_scale(documents: list[tuple[str, dict[str, Any]]]) -> str:
    """Core-seconds per phase and WAL per million source rows (monthend bench
    --json), and the projection docs/scale.md explains."""
    out: list[str] = []
    # Per million source rows: the phases on one backend (seconds), the other
    # phases the workers run and validation's pieces (core-seconds), the
    # longest piece (seconds, or None), the WAL (bytes).
    per_million: dict[str, tuple[float, float, float, float | None, float]] = {}
    for name, document in sorted(documents, key=lambda d: _number(d[1]["result"]["txns"])):
        r = document["result"]
        millions = float(r["source_rows"]) / 1e6
        workers = int(r.get("workers_opened") or r["workers"])
        out.append(_source("scale", name, document))
        out.append("")
        rows = []
        serial = 0.0
        workers_core = 0.0
        pieces_core = 0.0
        for phase, seconds in r["phase_seconds"].items():
            cores = workers if phase in PARALLEL_PHASES else 1
            core_seconds = float(seconds) * cores
            if phase == "validation_pieces":
                pieces_core += core_seconds
            elif phase in PARALLEL_PHASES:
                workers_core += core_seconds
            else:
                serial += float(seconds)
            rows.append([phase, _fmt(float(seconds), 1), str(cores), _fmt(core_seconds, 1),
                         _fmt(core_seconds / millions, 1)])
        wall = float(r["end_to_end_seconds"])
        rows.append(["end to end", _fmt(wall, 1), "", "", ""])
        out += _table(["phase", "wall, s", "backends busy (at most)", "core-seconds",
                       "core-seconds per million source rows"], rows)
        out.append("")
        wal = r.get("wal_bytes_per_million_source_rows")
        share = r.get("serial_share")
        piece = r.get("validation_longest_piece")
        out.append(f"{_fmt(r['source_rows'])} source rows, {workers} range workers: the "
                   f"phases on one backend took {_fmt(serial, 1)} s, "
                   f"{_fmt(100 * serial / wall, 1)}% of the wall time"
                   + (f" (fewer than two backends busy: {_fmt(100 * float(share), 1)}%)"
                      if share is not None else "")
                   + (f"; validation's longest piece, the {piece['table']} table's "
                      f"{piece['task']}, took {_fmt(float(piece['seconds']), 1)} s"
                      if piece else "")
                   + f"; WAL written {_fmt(r['wal_bytes'] / 1e9, 2)} GB, "
                   f"{_fmt((wal or 0) / 1e6, 0)} MB per million source rows "
                   f"({_fmt(r['wal_full_page_images'])} full-page images).")
        out.append("")
        per_million[name] = (serial / millions, workers_core / millions, pieces_core / millions,
                             float(piece["seconds"]) / millions if piece else None,
                             float(wal or 0))
    if per_million:
        # The newest measurement (of the code as it is), the largest of those.
        basis = max(documents, key=lambda d: (d[1]["measured_on"],
                                              _number(d[1]["result"]["txns"])))[0]
        serial_pm, workers_pm, pieces_pm, longest_pm, wal_pm = per_million[basis]
        out.append(f"Projected from the largest run of the newest date ({basis}), linear in "
                   f"rows, on {PROJECTED_CORES} cores: pre-flight's ranges and processing "
                   "spread over all of them; validation's pieces too, but never shorter than "
                   + ("their longest piece, on one backend"
                      if longest_pm is not None else
                      "their longest piece (not recorded by this measurement: no floor)")
                   + "; the other phases as they run today (one backend):")
        out.append("")
        rows = []
        for target_rows in PROJECTED_ROWS:
            m = target_rows / 1e6
            serial_s = serial_pm * m
            workers_s = workers_pm * m / PROJECTED_CORES
            pieces_s = max(pieces_pm * m / PROJECTED_CORES, (longest_pm or 0.0) * m)
            total = serial_s + workers_s + pieces_s
            rows.append([f"{target_rows / 1e6:,.0f}M", _fmt(serial_s, 0), _fmt(workers_s, 0),
                         _fmt(pieces_s, 0), _fmt(total, 0),
                         _fmt(100 * serial_s / total, 0),
                         _fmt(wal_pm * m / 1e9, 1),
                         _fmt(wal_pm * m / 1e6 / total, 0)])
        out += _table(["source rows", "phases on one backend, s",
                       "pre-flight's ranges and processing, s", "validation's pieces, s",
                       "total, s", "phases on one backend, %", "WAL, GB",
                       "WAL rate needed, MB/s"], rows)
        out.append("")
    return "\n".join(out).rstrip("\n")


def render_parallel(documents: list[tuple[str, dict[str, Any]]]) -> str:
    """Checkouts and worker counts in one sitting, alternated (tools/bench_ab.py)."""
    out: list[str] = []
    for name, document in documents:
        out.append(_source("parallel", name, document))
        out.append("")
        groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for run in document["runs"]:
            groups.setdefault((run["variant"], run["commit"], run["workers"]), []).append(run)

        def each(runs: list[dict[str, Any]], field: str) -> str:
            return " / ".join(_fmt(r.get(field)) for r in runs)

        def median(runs: list[dict[str, Any]], field: str) -> str:
            values = [float(r[field]) for r in runs if r.get(field) is not None]
            return _fmt(round(statistics.median(values), 3)) if values else "-"

        for runs in groups.values():
            for run in runs:
                phases = run.get("phase_seconds") or {}
                run["preflight_seconds"] = round(float(phases.get("preflight") or 0)
                                                 + float(phases.get("preflight_ranges") or 0), 3)
        rows = [[variant, f"`{commit}`", str(workers), _fmt(runs[0].get("workers_opened")),
                 each(runs, "end_to_end_seconds"), median(runs, "end_to_end_seconds"),
                 each(runs, "preflight_seconds"), each(runs, "raw_write_seconds"),
                 median(runs, "ratio"), median(runs, "serial_seconds"),
                 median(runs, "serial_share")]
                for (variant, commit, workers), runs in groups.items()]
        out += _table(["variant", "commit", "workers asked", "opened",
                       "end to end by round, s", "median, s", "pre-flight by round, s",
                       "raw write by round, s", "ratio, median", "serial, s, median",
                       "serial share, median"], rows)
        out.append("")
    return "\n".join(out).rstrip("\n")


SECTIONS = (
    ("measured", None),
    ("parallel", render_parallel),
    ("verification", render_verification),
    ("ablation", render_ablation),
    ("archive", render_archive),
    ("scale", render_scale),
)


def render_page(page: str, measurements: list[tuple[str, dict[str, Any]]]) -> str:
    """The page with the section between each pair of markers replaced."""
    for kind, render in SECTIONS:
        begin, end_marker = f"<!-- BEGIN {kind} -->", f"<!-- END {kind} -->"
        start, end = page.find(begin), page.find(end_marker)
        if start < 0 or end < start:
            raise SystemExit(f"{PAGE}: the markers {begin} and {end_marker} are missing")
        body = (render_section(measurements) if render is None
                else render(_documents(DATA / kind)))
        page = page[:start + len(begin)] + "\n" + body + "\n" + page[end:]
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="Change nothing; exit 1 when the page is out of date.")
    args = parser.parse_args()
    current = PAGE.read_text(encoding="utf-8")
    rendered = render_page(current, load_measurements())
    if args.check:
        if rendered != current:
            print(f"{PAGE.relative_to(ROOT)} is out of date: "
                  "run python tools/render_performance.py", file=sys.stderr)
            return 1
        return 0
    if rendered != current:
        PAGE.write_text(rendered, encoding="utf-8")
        print(f"rewrote the measured section of {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
