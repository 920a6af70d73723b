"""``monthend verify --archive DIR``: an archive checked with no database.

Every file is read once, streaming: its bytes hashed against the manifest's
sha256, its records counted against the manifest's rows. From the ledger's
two files (sorted by batch and je_id) every range's root is recomputed as its
batch was sealed (seal version 2: the RFC 6962 Merkle tree over the entries;
version 1: sha256 of the entries' texts), then every batch's root, and
compared with the range and batch files, the manifest and the BATCH_COMMITTED
row of the archived chain. The period's seal is recomputed from its seal
batches and balances. The archived chain is relinked from genesis, each row's
hash recomputed; the rows that sealed the period and its batches must be in
it. A kept head (``--head-file``) at or before the archive's last chain row
must be in it with its hash.

Each entry is also checked on its own (lines under a header, dated with it,
debits equal to credits in each currency): a changed amount is named by its
je_number, not only by the range root it breaks.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from monthend import proof
from monthend.archive_files import FILE_BY_STEM, FILES, FileRead, UnreadableFile, read_manifest
from monthend.verify import GENESIS_HASH, KeptHead, link_hash, log_text

# Entries named per problem before the rest are only counted.
LISTED = 20


def _bytea(value: str | None) -> str | None:
    """A bytea field as written (``\\x…``) to plain hex."""
    return value[2:] if value and value.startswith("\\x") else value


def _join(*fields: str | None) -> str:
    """concat_ws('|', …): NULLs left out."""
    return "|".join(f for f in fields if f is not None)


HEADER_FIELDS = ("je_id", "je_number", "je_date", "period", "batch_id", "source_type",
                 "source_id", "je_seq", "currency", "fx_rate", "description", "source_amount")
LINE_V1_FIELDS = ("je_id", "je_date", "line_no", "account_code", "debit", "credit",
                  "functional_debit", "functional_credit", "batch_id")
LINE_V2_FIELDS = ("line_no", "account_code", "debit", "credit", "functional_debit",
                  "functional_credit")


class _Layout:
    """Where each field is in a ledger file's records (its header line)."""

    def __init__(self, columns: list[str]) -> None:
        at = {c: i for i, c in enumerate(columns)}
        self.at = at
        self.header = [at[c] for c in HEADER_FIELDS if c in at]
        self.v1 = [at[c] for c in LINE_V1_FIELDS if c in at]
        self.v2 = [at[c] for c in LINE_V2_FIELDS if c in at]
        self.reverses = at.get("reverses_je_id")
        self.source_date = at.get("source_date")


def header_text(h: list[str], layout: _Layout) -> str:
    """audit.canonical_header_text of an archived header record: its fields
    (none of them NULL), then R<je_id reversed> and S<source date> when set."""
    fields = ["H", *(h[i] for i in layout.header)]
    if layout.reverses is not None and h[layout.reverses]:
        fields.append("R" + h[layout.reverses])
    if layout.source_date is not None and h[layout.source_date]:
        fields.append("S" + h[layout.source_date])
    return "|".join(fields)


def line_text(line: list[str], layout: _Layout, seal_version: int) -> str:
    """A line record's canonical text under its batch's seal version
    (audit.canonical_line_text, audit.canonical_line_text_v2); no field of a
    line is NULL."""
    return "|".join(["L", *(line[i] for i in (layout.v1 if seal_version == 1 else layout.v2))])


def balance_text(b: dict[str, str | None]) -> str:
    """audit.canonical_balance_text of an archived balance row."""
    return _join("B", b["period"], b["account_code"], b["currency"], b["lines"], b["opening"],
                 b["debit"], b["credit"], b["closing"], b["functional_opening"],
                 b["functional_debit"], b["functional_credit"], b["functional_closing"])


class _RangeRoot:
    """A range's root, computed entry by entry as the range's seal version does."""

    def __init__(self, seal_version: int) -> None:
        self.version = seal_version
        self.leaves: list[bytes] = []
        self.v1 = hashlib.sha256()
        self.entries = 0

    def add(self, entry_text: str) -> None:
        data = entry_text.encode("utf-8")
        if self.version == 1:
            if self.entries:
                self.v1.update(b"\n")
            self.v1.update(data)
        else:
            self.leaves.append(proof.leaf_hash(data))
        self.entries += 1

    def root(self) -> bytes:
        return self.v1.digest() if self.version == 1 else proof.merkle_root(self.leaves)


def batch_root(seal_version: int, range_roots: list[bytes]) -> bytes:
    """audit.batch_root: v1 sha256 of the range roots' hex lines, v2 the Merkle
    tree over them."""
    if seal_version == 1:
        return hashlib.sha256("\n".join(r.hex() for r in range_roots).encode()).digest()
    return proof.merkle_root([proof.leaf_hash(r) for r in range_roots])


class Check:
    """The problems found, each naming the file and, where one can be named,
    the batch, range and entry."""

    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []
        self._counted: dict[str, int] = defaultdict(int)

    def problem(self, file: str, problem: str, detail: str, batch_id: Any = None,
                range_no: Any = None, je_number: str | None = None) -> None:
        self._counted[problem] += 1
        if self._counted[problem] == LISTED + 1:
            self.problems.append({"file": file, "problem": problem, "batch_id": None,
                                  "range_no": None, "je_number": None,
                                  "detail": f"more {problem} problems, not listed"})
        if self._counted[problem] > LISTED:
            return
        self.problems.append({"file": file, "problem": problem,
                              "batch_id": None if batch_id is None else int(batch_id),
                              "range_no": None if range_no is None else int(range_no),
                              "je_number": je_number, "detail": detail})


def _entries(headers: FileRead, lines: FileRead, check: Check,
             ) -> Iterator[tuple[list[str], list[list[str]], _Layout, _Layout]]:
    """Each header record with its line records, both files being sorted by
    (batch_id, je_id). A line with no header is a problem of the line file."""
    line_records = lines.records()
    line = next(line_records, None)
    lay_l = _Layout(lines.columns)
    lay_h: _Layout | None = None
    lb, lj, ln = lay_l.at.get("batch_id", 0), lay_l.at.get("je_id", 0), lay_l.at.get("line_no", 0)
    for h in headers.records():
        if lay_h is None:
            lay_h = _Layout(headers.columns)
        key = (int(h[lay_h.at["batch_id"]] or 0), int(h[lay_h.at["je_id"]] or 0))
        own = []
        while line is not None:
            lkey = (int(line[lb] or 0), int(line[lj] or 0))
            if lkey > key:
                break
            if lkey == key:
                own.append(line)
            else:
                check.problem("journal_entry_line.csv.gz", "LINE_WITHOUT_HEADER",
                              f"line {line[ln]} of je_id {line[lj]} has no header (or the file "
                              "is not in batch_id, je_id order)", batch_id=line[lb] or None)
            line = next(line_records, None)
        yield h, own, lay_h, lay_l
    while line is not None:
        check.problem("journal_entry_line.csv.gz", "LINE_WITHOUT_HEADER",
                      f"line {line[ln]} of je_id {line[lj]} has no header",
                      batch_id=line[lb] or None)
        line = next(line_records, None)


def _check_entry(h: list[str], own: list[list[str]], lay_h: _Layout, lay_l: _Layout,
                 check: Check) -> None:
    """One entry on its own: lines dated with the header, numbered in order,
    debits equal to credits in transaction and in functional currency."""
    at, la = lay_h.at, lay_l.at
    je, batch, date = h[at["je_number"]], h[at["batch_id"]], h[at["je_date"]]
    if not own:
        check.problem("journal_entry_header.csv.gz", "ENTRY_WITHOUT_LINES", f"{je} has no lines",
                      batch, je_number=je)
        return
    numbers = [int(x[la["line_no"]] or 0) for x in own]
    if numbers != sorted(numbers):
        check.problem("journal_entry_line.csv.gz", "LINE_ORDER",
                      f"{je}: lines are not in line_no order", batch, je_number=je)
    if any(x[la["je_date"]] != date for x in own):
        check.problem("journal_entry_line.csv.gz", "LINE_DATE_MISMATCH",
                      f"{je}: a line is dated otherwise than its header ({date})", batch,
                      je_number=je)
    d, c, fd, fc = la["debit"], la["credit"], la["functional_debit"], la["functional_credit"]
    zero = Decimal(0)
    balance = functional = zero
    try:
        for x in own:
            balance += Decimal(x[d]) - Decimal(x[c])
            functional += Decimal(x[fd]) - Decimal(x[fc])
    except ArithmeticError:
        check.problem("journal_entry_line.csv.gz", "AMOUNT_MALFORMED",
                      f"{je}: an amount is not a number", batch, je_number=je)
        return
    if balance != zero or functional != zero:
        check.problem("journal_entry_line.csv.gz", "ENTRY_UNBALANCED",
                      f"{je}: debits less credits {balance} (functional {functional})", batch,
                      je_number=je)


def _ledger(directory: Path, runs: dict[int, dict[str, Any]],
            ranges: dict[int, list[dict[str, Any]]], check: Check,
            reads: dict[str, FileRead]) -> dict[int, list[bytes]]:
    """Every range's root recomputed from the ledger files; the roots by batch,
    in range order. A range's entries come together (the files are sorted by
    batch and je_id), so only the range being read is held: its leaf hashes."""
    header_file = FileRead(directory / FILE_BY_STEM["journal_entry_header"].name)
    line_file = FileRead(directory / FILE_BY_STEM["journal_entry_line"].name)
    reads["journal_entry_header"], reads["journal_entry_line"] = header_file, line_file
    lows = {b: [int(runs[b]["je_id_base"] or 0) + int(g["je_offset"]) for g in rs]
            for b, rs in ranges.items()}
    done: dict[tuple[int, int], bytes] = {}
    seen: dict[tuple[int, int], int] = defaultdict(int)
    key: tuple[int, int] | None = None
    computing: _RangeRoot | None = None

    for h, own, lay_h, lay_l in _entries(header_file, line_file, check):
        at = lay_h.at
        batch, je_id, je = int(h[at["batch_id"]] or 0), int(h[at["je_id"]] or 0), \
            h[at["je_number"]]
        _check_entry(h, own, lay_h, lay_l, check)
        if batch not in runs:
            check.problem(header_file.path.name, "ENTRY_OF_NO_BATCH",
                          f"{je} is of batch {batch}, which run.csv.gz has not as committed",
                          batch, je_number=je)
            continue
        k = bisect.bisect_right(lows.get(batch, []), je_id) - 1
        if k < 0 or je_id >= lows[batch][k] + int(ranges[batch][k]["je_count"]):
            check.problem(header_file.path.name, "ENTRY_OUTSIDE_RANGES",
                          f"{je} (je_id {je_id}) is in no range of batch {batch}", batch,
                          je_number=je)
            continue
        if (batch, k) != key:
            if key is not None and computing is not None:
                done[key] = computing.root()
            key = (batch, k)
            if key in done:
                check.problem(header_file.path.name, "ENTRY_ORDER",
                              f"{je}: the entries of range {ranges[batch][k]['range_no']} of "
                              f"batch {batch} are not together (the file is not in batch_id, "
                              "je_id order)", batch, ranges[batch][k]["range_no"], je)
            computing = _RangeRoot(int(runs[batch]["seal_version"]))
        assert computing is not None
        seen[key] += 1
        version = computing.version
        computing.add("\n".join([header_text(h, lay_h),
                                  *(line_text(x, lay_l, version) for x in own)]))
    if key is not None and computing is not None:
        done[key] = computing.root()

    roots: dict[int, list[bytes]] = {}
    for batch, batch_ranges in ranges.items():
        version = int(runs[batch]["seal_version"])
        roots[batch] = [done.get((batch, k)) or _RangeRoot(version).root()
                        for k in range(len(batch_ranges))]
        for k, g in enumerate(batch_ranges):
            if seen[(batch, k)] != int(g["je_count"]):
                check.problem(header_file.path.name, "RANGE_ENTRY_COUNT",
                              f"range {g['range_no']} of batch {batch} has {seen[(batch, k)]} "
                              f"entries in the archive, {g['je_count']} sealed", batch,
                              g["range_no"])
    return roots


def _chain(rows: list[dict[str, Any]], check: Check) -> dict[int, dict[str, Any]]:
    """The archived chain relinked from genesis; its rows by seq."""
    previous = GENESIS_HASH
    by_seq: dict[int, dict[str, Any]] = {}
    for expected_seq, row in enumerate(rows, start=1):
        seq = int(row["seq"])
        by_seq[seq] = row
        if seq != expected_seq:
            check.problem("audit_log.csv.gz", "CHAIN_SEQ_GAP",
                          f"row {expected_seq} of the chain has seq {seq}")
        if row["prev_hash"] != previous:
            check.problem("audit_log.csv.gz", "CHAIN_BROKEN_LINK",
                          f"row {seq}: prev_hash {row['prev_hash']}, the previous row's hash "
                          f"{previous}")
        text = log_text(seq, row["at"] or "", row["event"] or "",
                        None if row["batch_id"] is None else int(row["batch_id"]),
                        row["actor"] or "", row["payload"] or "")
        recomputed = link_hash(bytes.fromhex(row["prev_hash"] or ""), text).hex()
        if recomputed != row["hash"]:
            check.problem("audit_log.csv.gz", "CHAIN_HASH_MISMATCH",
                          f"row {seq} ({row['event']}): stored hash {row['hash']}, its content "
                          f"hashes to {recomputed}", row["batch_id"])
        previous = row["hash"] or ""
    return by_seq


def verify_archive(directory: Path, kept: KeptHead | None = None) -> dict[str, Any]:
    """The result document of checking the archive in ``directory``."""
    manifest, manifest_sha256 = read_manifest(directory)
    check = Check()
    reads: dict[str, FileRead] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    listed = {f["name"]: f for f in manifest.get("files", [])}
    for spec in FILES:
        if spec.name not in listed:
            check.problem(spec.name, "FILE_NOT_LISTED", f"the manifest does not list {spec.name}")
    if check.problems:
        return _result(directory, manifest, manifest_sha256, check, reads, kept, None)

    for spec in FILES:
        if spec.stem in ("journal_entry_header", "journal_entry_line"):
            continue
        read = FileRead(directory / spec.name)
        reads[spec.stem] = read
        try:
            tables[spec.stem] = [r for r in read if spec.stem != "source_claim"]
        except UnreadableFile as exc:
            check.problem(exc.name, "FILE_UNREADABLE", str(exc))
            tables[spec.stem] = []
    if any(p["problem"] == "FILE_UNREADABLE" and p["file"] in ("run.csv.gz", "range.csv.gz")
           for p in check.problems):
        return _result(directory, manifest, manifest_sha256, check, reads, kept, None)

    runs = {int(r["batch_id"]): r for r in tables["run"] if r["status"] == "COMMITTED"}
    ranges: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for g in tables["range"]:
        if int(g["batch_id"]) in runs:
            ranges[int(g["batch_id"])].append(g)
    try:
        roots = _ledger(directory, runs, ranges, check, reads)
    except UnreadableFile as exc:
        check.problem(exc.name, "FILE_UNREADABLE", str(exc))
        return _result(directory, manifest, manifest_sha256, check, reads, kept, None)
    except (KeyError, ValueError, IndexError) as exc:
        check.problem("journal_entry_header.csv.gz", "FILE_MALFORMED",
                      f"the ledger's files are not the ledger's columns and values ({exc!r})")
        return _result(directory, manifest, manifest_sha256, check, reads, kept, None)
    finally:
        for stem in ("journal_entry_header", "journal_entry_line"):
            if stem in reads and not reads[stem].complete:
                reads[stem].finish_hashing()

    chain = _chain(tables["audit_log"], check)
    by_batch = {int(b["batch_id"]): b for b in manifest.get("batches", [])}
    committed_rows = {int(r["batch_id"]): r for r in chain.values()
                      if r["event"] == "BATCH_COMMITTED" and r["batch_id"] is not None}
    for batch, run in sorted(runs.items()):
        version = int(run["seal_version"])
        computed = batch_root(version, roots.get(batch, []))
        stored = {"run.csv.gz": _bytea(run["digest"]),
                  "manifest.json": (by_batch.get(batch) or {}).get("batch_root")}
        for g, root in zip(ranges.get(batch, []), roots.get(batch, []), strict=False):
            if _bytea(g["digest"]) != root.hex():
                check.problem("journal_entry_header.csv.gz", "RANGE_ROOT_MISMATCH",
                              f"range {g['range_no']} of batch {batch} (je_id from "
                              f"{int(run['je_id_base'] or 0) + int(g['je_offset'])}, "
                              f"{g['je_count']} entries) hashes to {root.hex()}, sealed "
                              f"{_bytea(g['digest'])}", batch, g["range_no"])
        sealed_row = committed_rows.get(batch)
        if sealed_row is None:
            check.problem("audit_log.csv.gz", "BATCH_NOT_SEALED",
                          f"the archived chain has no BATCH_COMMITTED row of batch {batch}", batch)
        else:
            stored["audit_log.csv.gz"] = _payload(sealed_row).get("digest")
        for where, value in stored.items():
            if value != computed.hex():
                check.problem(where, "BATCH_ROOT_MISMATCH",
                              f"batch {batch}: the archived entries hash to {computed.hex()}, "
                              f"{where} says {value}", batch)
    # The batches are the same set wherever the archive names them: the
    # period's seal (its seal batches), its committed runs, the manifest, and
    # the chain's BATCH_COMMITTED rows of the period. A batch removed from
    # the files and the manifest is still in the seal and the chain.
    period = manifest.get("period")
    sealed = {int(x["batch_id"]): _bytea(x["digest"]) for x in tables["period_seal_batch"]}
    named = {"run.csv.gz": set(runs), "manifest.json": set(by_batch),
             "period_seal_batch.csv.gz": set(sealed),
             "audit_log.csv.gz": {b for b, r in committed_rows.items()
                                  if _payload(r).get("period") == period}}
    every = set().union(*named.values())
    for where, batches in named.items():
        for batch in sorted(every - batches):
            check.problem(where, "BATCH_MISSING",
                          f"batch {batch} of period {period} is not in {where}, though "
                          + ", ".join(w for w, b in named.items() if batch in b) + " have it",
                          batch)
    for batch, digest in sorted(sealed.items()):
        if batch in runs and digest != _bytea(runs[batch]["digest"]):
            check.problem("period_seal_batch.csv.gz", "BATCH_ROOT_MISMATCH",
                          f"the period's seal covers batch {batch} with root {digest}, "
                          f"run.csv.gz says {_bytea(runs[batch]['digest'])}", batch)

    _period_seal(manifest, tables, chain, check)
    head = (manifest.get("chain") or {}).get("head") or {}
    last_row = chain.get(max(chain)) if chain else None
    if last_row is None or (head.get("seq"), head.get("hash")) != (int(last_row["seq"]),
                                                                   last_row["hash"]):
        check.problem("audit_log.csv.gz", "CHAIN_HEAD_MISMATCH",
                      f"the manifest's head is row {head.get('seq')} ({head.get('hash')}); the "
                      "archived chain ends at "
                      + (f"row {last_row['seq']} ({last_row['hash']})" if last_row else "nothing"))
    head = _kept_head(kept, chain, check)
    return _result(directory, manifest, manifest_sha256, check, reads, kept, head)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row["payload"] or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _period_seal(manifest: dict[str, Any], tables: dict[str, list[dict[str, Any]]],
                 chain: dict[int, dict[str, Any]], check: Check) -> None:
    """The period's seal (audit.period_seal_digest) from its seal batches and
    balances, against the period row, the manifest and the last PERIOD_CLOSED."""
    period = manifest.get("period")
    seal = manifest.get("period_seal") or {}
    previous = (None if seal.get("previous_period") is None
                else _join("P", period, seal["previous_period"], seal.get("previous_seal_digest")))
    if previous is None:
        previous = _join("P", period)
    parts = [previous]
    batches = "\n".join(_join("S", s["seal_order"], s["batch_id"], _bytea(s["digest"]))
                        for s in tables["period_seal_batch"])
    balances = "\n".join(balance_text(b) for b in tables["period_balance"])
    parts += [p for p in (batches, balances) if p]
    computed = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()
    rows = tables["accounting_period"]
    stored = {"manifest.json": seal.get("digest"),
              "accounting_period.csv.gz": _bytea(rows[0]["seal_digest"]) if rows else None}
    closed = [r for r in chain.values()
              if r["event"] == "PERIOD_CLOSED" and _payload(r).get("period") == period]
    if closed:
        stored["audit_log.csv.gz"] = _payload(closed[-1]).get("seal_digest")
    else:
        check.problem("audit_log.csv.gz", "PERIOD_NOT_SEALED",
                      f"the archived chain has no PERIOD_CLOSED row of period {period}")
    for where, value in stored.items():
        if value != computed:
            check.problem(where, "PERIOD_SEAL_MISMATCH",
                          f"period {period}: its seal batches and balances hash to {computed}, "
                          f"{where} says {value}")


def _kept_head(kept: KeptHead | None, chain: dict[int, dict[str, Any]],
               check: Check) -> dict[str, Any] | None:
    if kept is None:
        return None
    last = max(chain) if chain else 0
    if kept.seq > last:
        return {**kept.as_dict(), "checked": False,
                "detail": f"the kept head (row {kept.seq}) is after the archived chain, which "
                          f"ends at row {last}: `monthend verify --head-file` checks it against "
                          "the database's chain"}
    row = chain.get(kept.seq)
    if row is None or row["hash"] != kept.hash:
        check.problem("audit_log.csv.gz", "KEPT_HEAD_MISMATCH",
                      f"the kept head is row {kept.seq} with hash {kept.hash}; the archived "
                      f"chain has {row['hash'] if row else 'no such row'}")
    return {**kept.as_dict(), "checked": True, "detail": None}


def _result(directory: Path, manifest: dict[str, Any], manifest_sha256: str, check: Check,
            reads: dict[str, FileRead], kept: KeptHead | None,
            head: dict[str, Any] | None) -> dict[str, Any]:
    listed = {f["name"]: f for f in manifest.get("files", [])}
    files = []
    for spec in FILES:
        read = reads.get(spec.stem)
        entry = listed.get(spec.name) or {}
        if read is None or read._hashing is None:
            files.append({"name": spec.name, "rows": None, "sha256": None, "ok": False})
            continue
        ok = (read.complete and read.sha256 == entry.get("sha256")
              and read.rows == entry.get("rows"))
        if read.sha256 != entry.get("sha256"):
            check.problem(spec.name, "FILE_SHA256_MISMATCH",
                          f"{spec.name} has sha256 {read.sha256}, the manifest says "
                          f"{entry.get('sha256')}")
        if read.complete and read.rows != entry.get("rows"):
            check.problem(spec.name, "FILE_ROWS_MISMATCH",
                          f"{spec.name} has {read.rows} rows, the manifest says "
                          f"{entry.get('rows')}")
        files.append({"name": spec.name, "rows": read.rows, "sha256": read.sha256, "ok": ok})
    return {"ok": not check.problems, "archive": str(directory), "period": manifest.get("period"),
            "manifest_sha256": manifest_sha256, "files": files,
            "batches": len(manifest.get("batches", [])), "kept_head": head,
            "problems": check.problems}


def text(result: dict[str, Any]) -> str:
    lines = [f"archive {result['archive']} of period {result['period']} "
             f"(manifest sha256 {result['manifest_sha256']})"]
    for f in result["files"]:
        lines.append(f"  {'ok  ' if f['ok'] else 'FAIL'} {f['name']}: {f['rows']} rows")
    for p in result["problems"]:
        where = "".join([f" batch {p['batch_id']}" if p["batch_id"] is not None else "",
                         f" range {p['range_no']}" if p["range_no"] is not None else "",
                         f" {p['je_number']}" if p["je_number"] else ""])
        lines.append(f"{p['problem']} in {p['file']}{where}: {p['detail']}")
    head = result.get("kept_head")
    if head and not head["checked"]:
        lines.append(head["detail"])
    lines.append("archive verifies: every file, range, batch and the period's seal"
                 if result["ok"] else "archive does NOT verify")
    return "\n".join(lines)
