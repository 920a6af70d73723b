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
import datetime
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

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


@dataclass(frozen=True)
class Scope:
    """What one verification covers.

    full: the whole chain, the ledger-wide checks, every committed batch and
    every closed period. incremental (since a kept head): the chain's rows
    after it, the batches and periods sealed after it, and the kept head
    itself; its cost grows with what is new, not with history. batch: one
    batch's seal, with the chain and the ledger checks."""

    mode: str
    batch_id: int | None = None
    since: KeptHead | None = None

    @property
    def after_seq(self) -> int:
        return self.since.seq if self.since else 0


def _tasks(conn: psycopg.Connection, scope: Scope,
           kept: KeptHead | None) -> list[tuple[str, Any]]:
    """The checks to run, largest first, read in the verification's snapshot."""
    tasks: list[tuple[str, Any]] = []
    if scope.mode != "incremental":
        tasks.append(("ledger", None))
    tasks.append(("chain", scope.after_seq))
    if scope.mode == "batch":
        batches = [scope.batch_id]
    elif scope.mode == "incremental":
        batches = [r["batch_id"] for r in
                   db.call(conn, "batches_sealed_since", after_seq=scope.after_seq)]
    else:
        batches = [r["batch_id"] for r in db.call(conn, "committed_batches")]
    tasks += [("batch", b) for b in batches]
    if scope.mode == "incremental":
        tasks += [("period", r["period"]) for r in
                  db.call(conn, "periods_sealed_since", after_seq=scope.after_seq)]
    elif scope.mode == "full":
        tasks += [("period", r["period"]) for r in db.call(conn, "sealed_periods")]
    if kept:
        tasks.append(("kept_head", kept))
    return tasks


def _run_task(conn: psycopg.Connection, task: tuple[str, Any]) -> list[dict[str, Any]]:
    kind, arg = task
    if kind == "ledger":
        return db.call(conn, "verify_ledger")
    if kind == "chain":
        return db.call(conn, "verify_chain", after_seq=arg)
    if kind == "batch":
        return db.call(conn, "verify_batch", batch_id=arg)
    if kind == "period":
        return db.call(conn, "verify_period", period=arg)
    return db.call(conn, "verify_kept_head", seq=arg.seq, hash=arg.hash)


def _snapshot_session(target: db.Target, snapshot: str | None) -> psycopg.Connection:
    """A read-only REPEATABLE READ session; with ``snapshot``, in that exported
    snapshot, so it sees exactly what the session that exported it sees."""
    conn = db.connect(target, autocommit=False, application_name="monthend verify")
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    if snapshot:
        with db.wrap_errors():
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    return conn


def run_checks(target: db.Target, scope: Scope, kept: KeptHead | None,
               jobs: int = 1) -> dict[str, Any]:
    """Every check of ``scope``, all in one snapshot: one read-only REPEATABLE
    READ transaction, or, with ``jobs`` > 1, that many sessions sharing the
    snapshot the first one exports (pg_export_snapshot), taking the checks
    from one queue, the largest first."""
    started = time.monotonic()
    results: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    with _snapshot_session(target, None) as leader:
        tasks = _tasks(leader, scope, kept)
        head = db.call_one(leader, "audit_head")
        archived = db.call(leader, "archived_periods",
                           after_seq=scope.after_seq if scope.mode == "incremental" else None)
        sessions = [leader]
        try:
            if jobs > 1 and len(tasks) > 1:
                with db.wrap_errors():
                    snapshot = leader.execute("SELECT pg_export_snapshot() AS id").fetchone()["id"]
                sessions += [_snapshot_session(target, snapshot)
                             for _ in range(min(jobs, len(tasks)) - 1)]
            queue: list[tuple[str, Any]] = list(tasks)
            lock = threading.Lock()

            def work(conn: psycopg.Connection) -> None:
                while True:
                    with lock:
                        if not queue:
                            return
                        task = queue.pop(0)
                    found = _run_task(conn, task)
                    with lock:
                        results[task[0], task[1]] = found

            if len(sessions) == 1:
                work(leader)
            else:
                with ThreadPoolExecutor(len(sessions)) as pool:
                    for future in [pool.submit(work, c) for c in sessions]:
                        future.result()
        finally:
            for conn in sessions[1:]:
                conn.close()
            leader.rollback()

    def found(kind: str) -> dict[Any, list[dict[str, Any]]]:
        return {arg: rows for (k, arg), rows in results.items() if k == kind}

    batches = [arg for kind, arg in tasks if kind == "batch"]
    periods = [arg for kind, arg in tasks if kind == "period"]
    batch_problems = found("batch")
    period_problems = found("period")
    chain = found("chain").get(scope.after_seq, [])
    ledger = found("ledger").get(None, [])
    kept_problems = next(iter(found("kept_head").values()), [])
    archives = _archives(archived, scope)
    counts = {"chain": len(chain), "ledger": len(ledger),
              "batch": sum(len(p) for p in batch_problems.values()),
              "period": sum(len(p) for p in period_problems.values()),
              "kept_head": len(kept_problems),
              "archive": sum(len(a["problems"]) for a in archives)}
    return {
        "ok": not any(counts.values()),
        "mode": scope.mode,
        "jobs": len(sessions),
        "seconds": round(time.monotonic() - started, 3),
        "chain_verified_after_seq": scope.after_seq,
        "ledger_checked": scope.mode != "incremental",
        "problem_counts": counts,
        "chain_problems": chain,
        "ledger_problems": ledger,
        "batch_problems": {str(b): batch_problems[b] for b in batches},
        "kept_head_problems": kept_problems,
        "batches_verified": batches,
        "batches_with_problems": [b for b in batches if batch_problems[b]],
        "period_problems": {p: period_problems[p] for p in periods},
        "periods_verified": periods,
        "archived_periods": archives,
        "head": head,
        "kept_head": kept.as_dict() if kept else None,
    }


def _archives(archived: list[dict[str, Any]], scope: Scope) -> list[dict[str, Any]]:
    """The archived periods, whose entries are not in the database. An
    incremental verification checks the archives let go after its head, at
    the location the chain recorded (their files, with no database); a full
    one names every archive, each checked by `monthend verify --archive`."""
    from monthend.archive_check import verify_archive
    from monthend.archive_files import read_manifest

    result = []
    for a in archived:
        entry = {**a, "checked": scope.mode == "incremental", "problems": []}
        if entry["checked"]:
            try:
                _, digest = read_manifest(Path(a["location"]))
                if digest != a["manifest_sha256"]:
                    entry["problems"].append({
                        "problem": "ARCHIVE_MANIFEST_MISMATCH",
                        "detail": f"the manifest at {a['location']} has sha256 {digest}; "
                                  f"PERIOD_ARCHIVED recorded {a['manifest_sha256']}"})
                else:
                    entry["problems"] += [
                        {"problem": p["problem"], "detail": f"{p['file']}: {p['detail']}"}
                        for p in verify_archive(Path(a["location"]))["problems"]]
            except ConfigurationError as exc:
                entry["problems"].append({"problem": "ARCHIVE_UNREADABLE",
                                          "detail": str(exc)})
        result.append(entry)
    return result


def checks_run(result: dict[str, Any]) -> list[str]:
    """The checks a result ran; incremental chain verification is named as such."""
    chain = ("verify_chain" if not result["chain_verified_after_seq"] else
             f"verify_chain_after_{result['chain_verified_after_seq']}")
    return [chain if c == "verify_chain" else c for c in CHECKS
            if (c != "verify_kept_head" or result["kept_head"])
            and (c != "verify_ledger" or result["ledger_checked"])
            and (c != "verify_period" or result["mode"] != "batch")]


def record(target: db.Target, result: dict[str, Any]) -> int:
    """Append the VERIFICATION_RUN event, in its own short transaction; its seq."""
    head = result["head"]
    payload = {
        "ok": result["ok"],
        "head": {"seq": head["seq"], "hash": head["hash"]} if head else None,
        "kept_head": result["kept_head"],
        "problems": result["problem_counts"],
        "checks": checks_run(result),
        "batches_verified": result["batches_verified"],
        "batches_with_problems": result["batches_with_problems"],
        "periods_verified": result["periods_verified"],
    }
    with db.connect(target) as conn:
        row = db.call_one(conn, "record_verification", result=jsonout.dumps(payload, indent=None))
    assert row is not None
    return int(row["seq"])


def verify(target: db.Target, batch_id: int | None = None, head_file: Path | None = None,
           record_run: bool = True, since_head: Path | None = None,
           jobs: int = 1) -> dict[str, Any]:
    """Run the checks, record the run, keep the head; the result document.

    With ``since_head`` (a head file), only what is new after that head is
    verified, and the file is replaced with the new head when all is well."""
    if since_head is not None:
        if batch_id is not None or head_file is not None:
            raise ConfigurationError("--since-head keeps its own head file; give it without "
                                     "--batch and --head-file.")
        kept = read_head_file(since_head)
        if kept is None:
            raise ConfigurationError(
                f"--since-head {since_head} does not exist: keep a first head with a full "
                f"verification, `monthend verify --full --head-file {since_head}`.")
        scope = Scope("incremental", since=kept)
        head_file = since_head
    else:
        kept = read_head_file(head_file) if head_file else None
        scope = Scope("batch", batch_id=batch_id) if batch_id is not None else Scope("full")
    result = run_checks(target, scope, kept, jobs)
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
        # A head is kept only by a verification of everything up to it: one
        # batch's passing says nothing of the others, and --since-head would
        # trust the file from then on.
        updated = result["ok"] and scope.mode != "batch"
        if updated:
            try:
                write_head_file(head_file, result["head"])
            except OSError as exc:
                raise ConfigurationError(
                    f"verification passed, but {head_file} could not be written: "
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
    for a in result["archived_periods"]:
        if a["checked"]:
            lines.append(f"period {a['period']} archived to {a['location']}: archive "
                         + ("verified" if not a["problems"] else "does NOT verify"))
            lines += [f"  {p['problem']}: {p['detail']}" for p in a["problems"]]
        else:
            lines.append(f"period {a['period']} is archived ({a['batches']} batches, "
                         f"{a['location']}): not in the database, so not verified here; "
                         f"`monthend verify --archive {a['location']}` verifies it")
    head = result["head"]
    counts = result["problem_counts"]
    verdict = "OK" if result["ok"] else "PROBLEMS FOUND"
    kept = ", kept head" if result["kept_head"] else ""
    chain = ("chain" if not result["chain_verified_after_seq"] else
             f"chain after row {result['chain_verified_after_seq']}")
    ledger = ", ledger" if result["ledger_checked"] else ""
    lines.append(
        f"{verdict}: {chain}{ledger}{kept}, {len(result['batches_verified'])} batch seal(s) and "
        f"{len(result['periods_verified'])} period seal(s) verified; "
        f"{sum(counts.values())} problem(s) (chain {counts['chain']}, ledger "
        f"{counts['ledger']}, batches {counts['batch']}, periods {counts['period']}, "
        f"kept head {counts['kept_head']}, archives {counts['archive']}); "
        f"head {head['seq'] if head else 0} {head['hash'] if head else GENESIS_HASH}; "
        f"{result['seconds']:.1f} s over {result['jobs']} session(s)")
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


def chain_row_text(row: dict[str, Any]) -> str:
    """An audit row's canonical content (audit.canonical_log_text), written again
    here from the row's stored fields so the check does not trust the
    database's function: seq, the time in UTC to the microsecond, event,
    batch_id (empty when none), actor and the payload's stored text, joined
    by '|'."""
    at = row["at"].astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return log_text(row["seq"], at, row["event"], row["batch_id"], row["actor"], row["payload"])


def log_text(seq: int, at: str, event: str, batch_id: int | None, actor: str,
             payload: str) -> str:
    """audit.canonical_log_text of a row whose time is already written as the
    chain writes it (UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``)."""
    batch = "" if batch_id is None else str(batch_id)
    return "|".join([str(seq), at, event, batch, actor, payload])


def link_hash(prev_hash: bytes, text: str) -> bytes:
    """A chain row's hash: sha256 of the previous row's hash and its canonical text."""
    return hashlib.sha256(prev_hash + text.encode("utf-8")).digest()


def between_heads(target: db.Target, from_file: Path, to_file: Path) -> dict[str, Any]:
    """Whether the chain leads from the head kept in ``from_file`` to the one in
    ``to_file``: the earlier row still carries its kept hash, every row after
    it links to the one before and hashes to its stored hash, and the later
    row is the later kept head. Only the chain rows between the two are read;
    the hashes are recomputed here."""
    old, new = read_head_file(from_file), read_head_file(to_file)
    for path, head in ((from_file, old), (to_file, new)):
        if head is None:
            raise ConfigurationError(f"{path} does not exist: give two kept heads.")
    assert old is not None and new is not None
    if new.seq < old.seq:
        raise ConfigurationError(f"{to_file} (row {new.seq}) is older than {from_file} (row "
                                 f"{old.seq}): give the earlier head as --from-head.")
    with db.connect(target) as conn:
        rows = db.call(conn, "chain_rows", from_seq=old.seq, to_seq=new.seq)
    problems: list[dict[str, Any]] = []

    def problem(seq: int, name: str, detail: str) -> None:
        problems.append({"seq": seq, "problem": name, "detail": detail})

    by_seq = {r["seq"]: r for r in rows}
    previous = GENESIS_HASH
    if old.seq > 0:
        first = by_seq.get(old.seq)
        if first is None:
            problem(old.seq, "KEPT_HEAD_MISSING", f"row {old.seq}, the earlier kept head, is "
                                                  "not in the chain")
        elif first["hash"] != old.hash:
            problem(old.seq, "KEPT_HEAD_MISMATCH", f"row {old.seq} carries hash {first['hash']}, "
                                                   f"the earlier kept head says {old.hash}")
        previous = old.hash
    elif old.hash != GENESIS_HASH:
        problem(0, "KEPT_HEAD_MISMATCH", f"a head at row 0 is the genesis hash {GENESIS_HASH}, "
                                         f"not {old.hash}")
    for seq in range(old.seq + 1, new.seq + 1):
        row = by_seq.get(seq)
        if row is None:
            problem(seq, "ROW_MISSING", f"row {seq} is missing between the two kept heads")
            previous = None
            continue
        if previous is not None and row["prev_hash"] != previous:
            problem(seq, "BROKEN_LINK", f"prev_hash {row['prev_hash']} does not match the "
                                        f"previous row's hash {previous}")
        recomputed = link_hash(bytes.fromhex(row["prev_hash"]), chain_row_text(row)).hex()
        if recomputed != row["hash"]:
            problem(seq, "HASH_MISMATCH", f"stored hash {row['hash']}, content hashes to "
                                          f"{recomputed}")
        previous = row["hash"]
    if new.seq in by_seq and by_seq[new.seq]["hash"] != new.hash:
        problem(new.seq, "KEPT_HEAD_MISMATCH", f"row {new.seq} carries hash "
                                               f"{by_seq[new.seq]['hash']}, the later kept head "
                                               f"says {new.hash}")
    return {"ok": not problems, "from_head": old.as_dict(), "to_head": new.as_dict(),
            "rows_checked": max(new.seq - old.seq, 0), "problems": problems}


def between_heads_text(result: dict[str, Any]) -> str:
    lines = [f"chain row {p['seq']}: {p['problem']}: {p['detail']}" for p in result["problems"]]
    old, new = result["from_head"], result["to_head"]
    lines.append(f"{'OK' if result['ok'] else 'PROBLEMS FOUND'}: the chain "
                 f"{'leads' if result['ok'] else 'does not lead'} from row {old['seq']} "
                 f"({old['hash'][:12]}…) to row {new['seq']} ({new['hash'][:12]}…); "
                 f"{result['rows_checked']} row(s) checked")
    return "\n".join(lines)
