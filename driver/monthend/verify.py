"""``monthend verify``: the audit verification functions, a head kept outside the
database, and the record of the run in the audit chain.

The checks (audit.verify_chain, audit.verify_ledger, audit.verify_batch for the
given or every committed batch, audit.verify_kept_head) run in one read-only
REPEATABLE READ transaction, so they all see one snapshot. Then, in a separate
short transaction, audit.record_verification appends a VERIFICATION_RUN event:
that write cannot share the read-only transaction, and it goes through the
chain like every other event.

The head file holds ``{"seq": n, "hash": "..."}``. A kept head must still be in
the chain at that seq with that hash; that catches a chain rewritten
consistently from genesis, or cut back below the kept row, which the chain's
own links cannot show. The file is replaced (temp file, fsync, rename) with
the verified head only when verification found nothing: a tampered chain never
becomes the new anchor.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from monthend import db, jsonout
from monthend.errors import ConfigurationError, MonthendError

GENESIS_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CHECKS = ("verify_chain", "verify_ledger", "verify_batch", "verify_period", "verify_kept_head")
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class KeptHead:
    seq: int
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


def read_head_file(path: Path) -> KeptHead | None:
    """The head kept in ``path``; None when the file does not exist yet."""
    if not path.parent.is_dir():
        raise ConfigurationError(f"--head-file {path}: directory {path.parent} does not exist.")
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"--head-file {path}: cannot read it: {exc}.") from exc
    try:
        data = json.loads(text)
        seq, digest = data["seq"], str(data["hash"]).lower()
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not _HASH.match(digest):
            raise ValueError
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(
            f"--head-file {path} is not a kept head: expected JSON like "
            '{"seq": 42, "hash": "<64 hex digits>"}. Restore it from your own copy; delete it '
            "only to start a new anchor from the chain as it is now.") from exc
    return KeptHead(seq, digest)


def write_head_file(path: Path, head: dict[str, Any] | None) -> None:
    """Replace ``path`` with ``head`` atomically: a crash leaves the old or the new file."""
    document = {"seq": head["seq"], "hash": head["hash"],
                "at": str(head["at"]) if head.get("at") is not None else None} \
        if head else {"seq": 0, "hash": GENESIS_HASH, "at": None}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(jsonout.dumps(document) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def run_checks(target: db.Target, batch_id: int | None,
               kept: KeptHead | None) -> dict[str, Any]:
    """Every check, in one read-only REPEATABLE READ transaction (one snapshot)."""
    with db.connect(target, autocommit=False) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        chain = db.call(conn, "verify_chain")
        ledger = db.call(conn, "verify_ledger")
        batches = ([batch_id] if batch_id is not None else
                   [r["batch_id"] for r in db.call(conn, "committed_batches")])
        batch_problems = {b: db.call(conn, "verify_batch", batch_id=b) for b in batches}
        # The closed periods' seals, on a full verification (not for one batch).
        periods = ([] if batch_id is not None else
                   [r["period"] for r in db.call(conn, "sealed_periods")])
        period_problems = {p: db.call(conn, "verify_period", period=p) for p in periods}
        kept_problems = (db.call(conn, "verify_kept_head", seq=kept.seq, hash=kept.hash)
                         if kept else [])
        head = db.call_one(conn, "audit_head")
        conn.rollback()
    counts = {"chain": len(chain), "ledger": len(ledger),
              "batch": sum(len(p) for p in batch_problems.values()),
              "period": sum(len(p) for p in period_problems.values()),
              "kept_head": len(kept_problems)}
    return {
        "ok": not any(counts.values()),
        "problem_counts": counts,
        "chain_problems": chain,
        "ledger_problems": ledger,
        "batch_problems": {str(b): p for b, p in batch_problems.items()},
        "kept_head_problems": kept_problems,
        "batches_verified": batches,
        "batches_with_problems": [b for b, p in batch_problems.items() if p],
        "period_problems": period_problems,
        "periods_verified": periods,
        "head": head,
        "kept_head": kept.as_dict() if kept else None,
    }


def record(target: db.Target, result: dict[str, Any]) -> int:
    """Append the VERIFICATION_RUN event, in its own short transaction; its seq."""
    head = result["head"]
    payload = {
        "ok": result["ok"],
        "head": {"seq": head["seq"], "hash": head["hash"]} if head else None,
        "kept_head": result["kept_head"],
        "problems": result["problem_counts"],
        "checks": [c for c in CHECKS if c != "verify_kept_head" or result["kept_head"]],
        "batches_verified": result["batches_verified"],
        "batches_with_problems": result["batches_with_problems"],
        "periods_verified": result["periods_verified"],
    }
    with db.connect(target) as conn:
        row = db.call_one(conn, "record_verification", result=jsonout.dumps(payload, indent=None))
    assert row is not None
    return int(row["seq"])


def verify(target: db.Target, batch_id: int | None, head_file: Path | None,
           record_run: bool = True) -> dict[str, Any]:
    """Run the checks, record the run, keep the head; the result document."""
    kept = read_head_file(head_file) if head_file else None
    result = run_checks(target, batch_id, kept)
    result["recorded_seq"] = None
    result["record_error"] = None
    if record_run:
        # The verdict stands either way (on a hot standby, say, nothing can be
        # written); a failed record is reported, not fatal.
        try:
            result["recorded_seq"] = record(target, result)
        except MonthendError as exc:
            result["record_error"] = str(exc).strip()
    if head_file:
        updated = result["ok"]
        if updated:
            try:
                write_head_file(head_file, result["head"])
            except OSError as exc:
                raise ConfigurationError(
                    f"verification passed, but --head-file {head_file} could not be written: "
                    f"{exc}. The kept head is unchanged.") from exc
        result["head_file"] = {"path": str(head_file), "existed": kept is not None,
                               "updated": updated}
    else:
        result["head_file"] = None
    return result


def _je(problem: dict[str, Any]) -> str:
    return f" {problem['je_number']}" if problem.get("je_number") else ""


def text(result: dict[str, Any]) -> str:
    """The human-readable report: one line a problem, then the verdict."""
    lines = [f"chain row {p['seq']}: {p['problem']}: {p['detail']}"
             for p in result["chain_problems"]]
    for p in result["ledger_problems"]:
        where = "".join(x for x in (p["period"] and f" period {p['period']}",
                                    p["batch_id"] is not None and f" batch {p['batch_id']}")
                        if x)
        lines.append(f"ledger{where}{_je(p)}: {p['problem']}: {p['detail']}")
    for b, problems in result["batch_problems"].items():
        for p in problems:
            where = f" range {p['range_no']}" if p["range_no"] is not None else ""
            lines.append(f"batch {b}{where}{_je(p)}: {p['problem']}: {p['detail']}")
    for period, problems in result["period_problems"].items():
        lines += [f"period {period}: {p['problem']}: {p['detail']}" for p in problems]
    lines += [f"kept head row {p['seq']}: {p['problem']}: {p['detail']}"
              for p in result["kept_head_problems"]]
    head = result["head"]
    counts = result["problem_counts"]
    verdict = "OK" if result["ok"] else "PROBLEMS FOUND"
    kept = ", kept head" if result["kept_head"] else ""
    lines.append(
        f"{verdict}: chain, ledger{kept}, {len(result['batches_verified'])} batch seal(s) and "
        f"{len(result['periods_verified'])} period seal(s) verified; "
        f"{sum(counts.values())} problem(s) (chain {counts['chain']}, ledger "
        f"{counts['ledger']}, batches {counts['batch']}, periods {counts['period']}, "
        f"kept head {counts['kept_head']}); "
        f"head {head['seq'] if head else 0} {head['hash'] if head else GENESIS_HASH}")
    if result["head_file"]:
        hf = result["head_file"]
        if hf["updated"]:
            lines.append(f"head kept in {hf['path']}")
        else:
            lines.append(f"{hf['path']} left unchanged: a head is kept only when "
                         "verification passes")
    if result["recorded_seq"] is not None:
        lines.append(f"recorded as VERIFICATION_RUN, audit row {result['recorded_seq']}")
    elif result["record_error"]:
        lines.append(f"not recorded in the audit chain: {result['record_error']}")
    return "\n".join(lines)
