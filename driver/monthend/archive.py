"""``monthend archive`` and ``monthend restore``: a permanently closed period
written to files that verify without the database, let go, and brought back.

Archive, in three steps, each safe to interrupt:

1. write: every file of the period (archive_files.FILES) streams from the
   server (``COPY (…) TO STDOUT``, one REPEATABLE READ snapshot) through gzip
   into ``DIR/<name>.partial``, hashed as it is written, then renamed; the
   manifest is written last, the same way. A directory without a manifest is
   an unfinished archive and is written again.
2. verify: the files are checked as an auditor would, with no database
   (archive_check.verify_archive), and their batch roots and period seal must
   be the ones the database sealed.
3. let go: one transaction (gl.archive_period) drops the period's ledger and
   claims partitions, makes it ARCHIVED and appends PERIOD_ARCHIVED with the
   manifest's sha256. Killed before it commits, the period is as it was;
   after, it is archived and its archive verified.

Restore verifies the archive first, then in one transaction makes the
period's partitions again, loads the rows (``COPY … FROM STDIN``, streamed
from the files) and verifies every batch against its seal
(gl.restore_period) before the period becomes RESTORED.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from monthend import __version__, db, migrate
from monthend.archive_check import verify_archive
from monthend.archive_files import (
    FILE_BY_STEM,
    FILES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ArchiveFile,
    HashingReader,
    read_manifest,
)
from monthend.errors import ConfigurationError, RunFailed

# gzip level of the files: the trade of size for time measured in the
# performance page (tools/archive_formats.py).
COMPRESS_LEVEL = 6
_CHUNK = 1 << 20
# The text forms of the values the files hold, whatever the server's or the
# client's defaults: the canonical texts of the seal are made of them, hashed
# as UTF-8.
_TEXT_FORMS = (("client_encoding", "UTF8"), ("DateStyle", "ISO, YMD"), ("TimeZone", "UTC"),
               ("bytea_output", "hex"))
# How long the let-go waits for the ledger's locks before giving up (and
# dropping nothing): it must not queue every run and report behind it.
LET_GO_LOCK_TIMEOUT = "30s"

Note = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class _HashingWriter:
    """A binary file that hashes (sha256) and counts what is written to it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_rename(tmp: Path, path: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _columns(conn: psycopg.Connection, query: str) -> list[dict[str, str]]:
    """The columns a file's query gives, with their SQL types."""
    cur = conn.execute(f"SELECT * FROM ({query}) AS q LIMIT 0")
    assert cur.description is not None
    return [{"name": c.name,
             "type": conn.execute("SELECT format_type(%s, NULL) AS t",
                                  (c.type_code,)).fetchone()["t"]}
            for c in cur.description]


def _blocks(conn: psycopg.Connection, statements: list[str], out: queue.Queue[Any],
            counted: list[int]) -> None:
    """Producer: the statements' COPY output in blocks of about _CHUNK bytes,
    then None (or the exception that stopped it). Runs beside the compressor,
    so the server's reading and the driver's gzip overlap."""
    try:
        cur = conn.cursor()
        block = bytearray()
        for statement in statements:
            with cur.copy(statement) as copy:
                for chunk in copy:
                    block += chunk
                    if len(block) >= _CHUNK:
                        out.put(bytes(block))
                        block.clear()
            counted.append(max(cur.rowcount, 0))
        out.put(bytes(block))
        out.put(None)
    except BaseException as exc:
        out.put(exc)


def _write_file(conn: psycopg.Connection, statements: list[str], path: Path,
                level: int) -> dict[str, Any]:
    """One file: the statements' COPY output as gzip'd CSV, streamed to disk
    (a few blocks in flight, never the file)."""
    tmp = path.with_name(path.name + ".partial")
    blocks: queue.Queue[Any] = queue.Queue(maxsize=8)
    counted: list[int] = []
    producer = threading.Thread(target=_blocks, args=(conn, statements, blocks, counted),
                                daemon=True)
    with tmp.open("wb") as raw:
        hashing = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashing,  # type: ignore[arg-type]
                           compresslevel=level, mtime=0) as gz:
            producer.start()
            try:
                while (block := blocks.get()) is not None:
                    if isinstance(block, BaseException):
                        raise block
                    gz.write(block)
            except BaseException:
                # The COPY holds the connection: cancel it and let the
                # producer end before the connection is used again.
                with contextlib.suppress(psycopg.Error):
                    conn.cancel()
                while producer.is_alive():
                    with contextlib.suppress(queue.Empty):
                        blocks.get(timeout=0.1)
                raise
            finally:
                producer.join()
    _durable_rename(tmp, path)
    return {"rows": sum(counted), "bytes": hashing.bytes, "sha256": hashing.sha256.hexdigest()}


def _statements(literal: psycopg.ClientCursor[Any], spec: ArchiveFile, params: dict[str, Any],
                ranges: list[dict[str, Any]]) -> list[str]:
    """The COPY statements whose output, one after the other, is the file."""
    copy = "COPY ({}) TO STDOUT WITH (FORMAT csv{})"
    if spec.by_range is None:
        return [copy.format(literal.mogrify(spec.select, params), ", HEADER true")]
    header = copy.format(literal.mogrify(spec.select, params) + " LIMIT 0", ", HEADER true")
    return [header] + [copy.format(literal.mogrify(spec.by_range, {**params, **r}), "")
                       for r in ranges]


def _state(conn: psycopg.Connection, period: str) -> dict[str, Any]:
    state = db.call_one(conn, "archive_period_state", period=period)
    if state is None:
        raise ConfigurationError(f"accounting period {period} does not exist "
                                 "(`monthend period list` shows the periods).")
    return state


def write_archive(target: db.Target, period: str, directory: Path,
                  level: int = COMPRESS_LEVEL, note: Note = _quiet) -> dict[str, Any]:
    """Write the archive of ``period`` into ``directory``; the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    with db.connect(target, autocommit=False) as conn, db.wrap_errors():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # The text forms the canonical texts are made of, whatever the
        # server's defaults; a sort of the ledger in memory where it fits.
        for name, value in (*_TEXT_FORMS, ("work_mem", "256MB")):
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        state = _state(conn, period)
        fingerprint = db.call_one(conn, "archive_rows_fingerprint", period=period)
        events = db.call_one(conn, "archive_period_events", period=period) or {}
        batches = db.call(conn, "archive_batches", period=period)
        params = {"period": period, "start": state["start_date"], "end": state["end_date"],
                  "head_seq": events["head"]["seq"]}
        ranges = db.call(conn, "archive_ranges", period=period)
        literal = psycopg.ClientCursor(conn)
        files = []
        for spec in FILES:
            started = time.monotonic()
            written = _write_file(conn, _statements(literal, spec, params, ranges),
                                  directory / spec.name, level)
            files.append({"name": spec.name, "table": spec.table, **written,
                          "columns": _columns(conn, literal.mogrify(spec.select, params))})
            note(f"wrote {spec.name}: {written['rows']} rows, {written['bytes']} bytes in "
                 f"{time.monotonic() - started:.1f} s")
        schema = migrate.applied_schema_version(conn)
    claims = next(f["rows"] for f in files if f["name"] == FILE_BY_STEM["source_claim"].name)
    reversals = next(f["rows"] for f in files
                     if f["name"] == FILE_BY_STEM["source_reversal"].name)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "period": period,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "monthend_version": __version__, "schema_version": schema,
        "compression": {"format": "gzip", "level": level},
        "files": files,
        "period_seal": {"digest": state["seal_digest"],
                        "previous_period": state["previous_period"],
                        "previous_seal_digest": state["previous_seal_digest"]},
        "batches": [{**b, "range_roots": list(b["range_roots"])} for b in batches],
        "claims": claims, "source_reversals": reversals,
        "claims_fingerprint": fingerprint["fingerprint"] if fingerprint else None,
        "chain": {"period_closed": events["period_closed"],
                  "period_locked": events["period_locked"], "head": events["head"]},
    }
    tmp = directory / (MANIFEST + ".partial")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    _durable_rename(tmp, directory / MANIFEST)
    return manifest


def _sealed(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the archive holds, as gl.archive_period checks it against the database."""
    rows = {f["name"]: f["rows"] for f in manifest["files"]}
    return {"seal_digest": manifest["period_seal"]["digest"],
            "batches": {str(b["batch_id"]): b["batch_root"] for b in manifest["batches"]},
            "headers": rows[FILE_BY_STEM["journal_entry_header"].name],
            "lines": rows[FILE_BY_STEM["journal_entry_line"].name],
            "claims": manifest["claims"], "source_reversals": manifest["source_reversals"],
            "claims_fingerprint": manifest.get("claims_fingerprint")}


def _refuse_failed(verified: dict[str, Any], what: str) -> None:
    if not verified["ok"]:
        first = verified["problems"][0]
        raise RunFailed(
            f"the archive in {verified['archive']} does not verify ({len(verified['problems'])}"
            f" problems; first: {first['problem']} in {first['file']}: {first['detail']}). "
            f"{what}\nSee `monthend verify --archive {verified['archive']}`.")


def archive(target: db.Target, period: str, directory: Path, reason: str | None = None,
            level: int = COMPRESS_LEVEL, note: Note = _quiet) -> dict[str, Any]:
    """Archive a permanently closed (or restored) period to ``directory`` and let it go."""
    directory = directory.resolve()
    with db.connect(target) as conn:
        state = _state(conn, period)
    status = state["status"]
    written = False
    if status == "ARCHIVED":
        raise ConfigurationError(
            f"period {period} is archived already, to {state['status_detail'].get('location')}.")
    if status not in ("PERMANENTLY_CLOSED", "RESTORED"):
        raise ConfigurationError(
            f"period {period} is {status}: only a permanently closed period is archived.\n"
            f"Close and lock it first: `monthend period close {period}`, then `monthend "
            f"period lock {period}`.")
    if status == "RESTORED":
        manifest, digest = read_manifest(directory)
        if digest != state["status_detail"].get("manifest_sha256"):
            raise ConfigurationError(
                f"period {period} was restored from the archive whose manifest has sha256 "
                f"{state['status_detail'].get('manifest_sha256')} "
                f"({state['status_detail'].get('location')}); {directory} holds another.")
    elif (directory / MANIFEST).exists():
        manifest, digest = read_manifest(directory)
        if manifest.get("period") != period:
            raise ConfigurationError(
                f"{directory} holds the archive of period {manifest.get('period')}: archive "
                f"{period} to a directory of its own.")
        note(f"{directory} holds an archive of {period} already: verifying it, not rewriting")
    else:
        started = time.monotonic()
        manifest = write_archive(target, period, directory, level, note)
        note(f"archive written in {time.monotonic() - started:.1f} s")
        digest = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
        written = True
    started = time.monotonic()
    verified = verify_archive(directory)
    note(f"archive verified in {time.monotonic() - started:.1f} s")
    _refuse_failed(verified, f"Period {period} was not let go.")
    # In a transaction the driver commits: a driver killed before its COMMIT
    # reached the server leaves nothing let go.
    with db.connect(target, autocommit=False) as conn:
        with db.wrap_errors():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (LET_GO_LOCK_TIMEOUT,))
        db.call(conn, "archive_let_go", period=period, manifest_sha256=digest,
                location=str(directory), sealed=json.dumps(_sealed(manifest)), reason=reason)
        with db.wrap_errors():
            conn.commit()
        state = _state(conn, period)
    return {"period": period, "status": state["status"], "archive": str(directory),
            "manifest_sha256": digest, "written": written,
            "files": [{k: f[k] for k in ("name", "rows", "bytes", "sha256")}
                      for f in manifest["files"]],
            "batches": len(manifest["batches"]), "verified": verified["ok"]}


def archive_due(target: db.Target, root: Path, note: Note = _quiet) -> dict[str, Any]:
    """Archive every permanently closed period older than the retention, each to
    ``root/<period>``, oldest first; stops at the first that fails."""
    with db.connect(target) as conn:
        due = db.call(conn, "archive_due")
        retention = db.call_one(conn, "retention_months")
    assert retention is not None
    archived = []
    for row in due:
        note(f"archiving {row['period']} to {root / row['period']}")
        archived.append(archive(target, row["period"], root / row["period"], note=note))
    return {"retention_months": retention["retention_months"], "archived": archived}


def _load(copy_conn: psycopg.Connection, table: str, columns: list[str], path: Path,
          sha256: str) -> int:
    """Stream one archive file into ``table`` (COPY FROM STDIN), hashing it as it
    is read: the bytes loaded must be the bytes verified. The rows loaded."""
    cur = copy_conn.cursor()
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(map(sql.Identifier, columns)))
    with path.open("rb") as raw:
        hashing = HashingReader(raw)
        with gzip.GzipFile(fileobj=hashing) as gz, cur.copy(statement) as copy:
            while chunk := gz.read(_CHUNK):
                copy.write(chunk)
        hashing.drain()
    if hashing.sha256.hexdigest() != sha256:
        raise RunFailed(f"{path} changed after it was verified (sha256 "
                        f"{hashing.sha256.hexdigest()}, the manifest {sha256}): nothing was "
                        "restored.")
    return cur.rowcount


def restore(target: db.Target, directory: Path, reason: str | None = None,
            note: Note = _quiet) -> dict[str, Any]:
    """Verify the archive in ``directory``, then bring its period back, RESTORED."""
    directory = directory.resolve()
    manifest, digest = read_manifest(directory)
    period = manifest["period"]
    with db.connect(target) as conn:
        state = _state(conn, period)
    if state["status"] != "ARCHIVED":
        raise ConfigurationError(f"period {period} is {state['status']}: only an archived "
                                 "period is restored.")
    if state["status_detail"].get("manifest_sha256") != digest:
        raise ConfigurationError(
            f"period {period} was archived with the manifest whose sha256 is "
            f"{state['status_detail'].get('manifest_sha256')} "
            f"({state['status_detail'].get('location')}); {directory / MANIFEST} is {digest}.")
    started = time.monotonic()
    verified = verify_archive(directory)
    note(f"archive verified in {time.monotonic() - started:.1f} s")
    _refuse_failed(verified, f"Period {period} was not restored.")
    listed = {f["name"]: f for f in manifest["files"]}
    loaded = {}
    with db.connect(target, autocommit=False) as conn, db.wrap_errors():
        for name, value in _TEXT_FORMS:
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        batches = db.call(conn, "restore_prepare", period=period, manifest_sha256=digest)
        for spec in FILES:
            if not spec.restored:
                continue
            started = time.monotonic()
            columns = [c["name"] for c in listed[spec.name]["columns"]]
            loaded[spec.name] = _load(conn, spec.table, columns, directory / spec.name,
                                      listed[spec.name]["sha256"])
            note(f"loaded {spec.name}: {loaded[spec.name]} rows in "
                 f"{time.monotonic() - started:.1f} s")
        started = time.monotonic()
        db.call(conn, "restore_finish", period=period, manifest_sha256=digest,
                location=str(directory), reason=reason)
        note(f"restored partitions verified against their seals in "
             f"{time.monotonic() - started:.1f} s")
        conn.commit()
        # The planner's statistics (and `monthend partitions`' row counts).
        suffix = period.replace("-", "_")
        conn.autocommit = True
        conn.execute(sql.SQL("ANALYZE {}, {}").format(
            sql.Identifier("gl", f"journal_entry_header_{suffix}"),
            sql.Identifier("gl", f"journal_entry_line_{suffix}")))
    return {"period": period, "status": "RESTORED", "archive": str(directory),
            "manifest_sha256": digest, "batches": len(batches), "rows": loaded}


def text(result: dict[str, Any]) -> str:
    if "rows" in result:
        return (f"period {result['period']} RESTORED from {result['archive']}: "
                f"{result['batches']} batches, "
                + ", ".join(f"{n} {name}" for name, n in result["rows"].items()))
    lines = [f"period {result['period']} {result['status']}: archive {result['archive']} "
             f"(manifest sha256 {result['manifest_sha256']}"
             + ("" if result["written"] else ", written before") + ")"]
    lines += [f"  {f['name']}: {f['rows']} rows, {f['bytes']} bytes" for f in result["files"]]
    return "\n".join(lines)

