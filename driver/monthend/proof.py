"""Inclusion proofs of one journal entry: ``monthend prove`` fetches one from
the database (audit.prove_entry), ``monthend check-proof`` checks one with no
database at all.

A proof (seal version 2) says: this entry's canonical bytes are leaf
``leaf_index`` of the ``range_size`` leaves of a range whose RFC 6962 Merkle
Tree Hash is ``range_root``; that root is leaf ``range_index`` of the
``range_count`` range roots whose Merkle Tree Hash is ``batch_root``; and
``batch_root`` is what audit row ``audit_seq`` (hash ``audit_hash``) sealed.
Checking it is hashing: the leaf, then up each audit path as RFC 9162
§2.1.3.2 says, comparing each root reached with the one the proof states. A
kept head (``monthend verify --head-file``) adds that the sealing row is in
the chain the auditor already holds: at or before the kept head, and, when it
is the kept head, with its hash.

Each check is a named step; a proof with any byte of its leaf, a path or a
root changed (and the roots above it not forged to match) fails at the step
that first sees it.

What the offline check cannot show, the proof having no more than its keys:
that ``batch_root`` is what row ``audit_seq`` sealed (that takes the row's
content, which is in the chain). The database's verification shows it
(audit.verify_batch compares every batch's seal with its ledger rows and
audit.verify_chain the row's hash), and a kept head of that very row ties
``audit_hash`` to what the auditor holds. A proof whose roots were all
recomputed around a forged leaf passes steps 1 to 4; it fails against the
chain.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monthend import db
from monthend.errors import ConfigurationError
from monthend.verify import KeptHead

# The keys of a proof, exactly: auditors' scripts depend on them.
PROOF_KEYS = ("je_number", "batch_id", "seal_version", "leaf", "leaf_index", "range_size",
              "range_path", "range_index", "range_count", "batch_path", "range_root",
              "batch_root", "audit_seq", "audit_hash")
_HEX32 = re.compile(r"^[0-9a-f]{64}$")


def fetch(target: db.Target, je_number: str) -> dict[str, Any]:
    """The proof of ``je_number`` as audit.prove_entry gives it."""
    with db.connect(target) as conn:
        row = db.call_one(conn, "prove_entry", je_number=je_number)
    assert row is not None
    return dict(row["proof"])


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaf_hashes: list[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash over leaves already hashed (leaf_hash),
    level by level as audit.merkle_root builds it: neighbours paired, a last
    node without a partner carried up; the empty tree is sha256 of nothing."""
    if not leaf_hashes:
        return hashlib.sha256(b"").digest()
    level = leaf_hashes
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


class PathError(ValueError):
    """An audit path that cannot be one for its index and tree size."""


def root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """The root an RFC 6962 audit path leads to from a leaf hash (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise PathError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            raise PathError(f"the path has {len(path)} hashes, more than leaf {index} of a "
                            f"tree of {size} has")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise PathError(f"the path has {len(path)} hashes, fewer than leaf {index} of a tree "
                        f"of {size} needs")
    return node


@dataclass(frozen=True)
class Step:
    step: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "detail": self.detail}


def read_proof_file(path: Path) -> dict[str, Any]:
    """A proof file as ``monthend prove --json`` wrote it; bad usage if it is not one."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{path}: no such file. Write one with "
                                 "`monthend prove JE_NUMBER --json > FILE`.") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"{path} is not a proof: {exc}. Write one with "
                                 "`monthend prove JE_NUMBER --json > FILE`.") from exc
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path} is not a proof: expected one JSON object with the keys "
                                 f"{', '.join(PROOF_KEYS)}.")
    return document


def _form(proof: dict[str, Any]) -> list[str]:
    """What is wrong with the proof's shape (keys and types), if anything."""
    problems = []
    missing = [k for k in PROOF_KEYS if k not in proof]
    extra = sorted(k for k in proof if k not in PROOF_KEYS)
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"unknown {', '.join(extra)}")
    for key in ("batch_id", "seal_version", "leaf_index", "range_size", "range_index",
                "range_count", "audit_seq"):
        value = proof.get(key)
        if key in proof and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{key} is not an integer")
    for key in ("je_number", "leaf"):
        if key in proof and not isinstance(proof[key], str):
            problems.append(f"{key} is not a string")
    for key in ("range_root", "batch_root", "audit_hash"):
        if key in proof and not (isinstance(proof[key], str) and _HEX32.match(proof[key])):
            problems.append(f"{key} is not 64 lowercase hex digits")
    for key in ("range_path", "batch_path"):
        value = proof.get(key)
        if key in proof and not (isinstance(value, list)
                                 and all(isinstance(x, str) and _HEX32.match(x) for x in value)):
            problems.append(f"{key} is not a list of 64-hex-digit hashes")
    if not problems and proof["seal_version"] != 2:
        problems.append(f"seal_version {proof['seal_version']} has no proofs of one entry; "
                        "this checks version 2")
    return problems


def _root_step(step: str, leaf: bytes, what: str, index: int, size: int,
               proof: dict[str, Any], path_key: str, root_key: str) -> Step:
    """The root that ``leaf`` at ``index`` of ``size`` and the proof's path lead to,
    compared with the root the proof states."""
    try:
        root = root_from_path(leaf, index, size, [bytes.fromhex(x) for x in proof[path_key]])
    except PathError as exc:
        return Step(step, False, f"{path_key}: {exc}")
    ok = root.hex() == proof[root_key]
    return Step(step, ok, f"{what} and its {path_key} hash to {root.hex()}"
                + ("" if ok else f", not to {root_key} {proof[root_key]}"))


def check(proof: dict[str, Any], kept: KeptHead | None = None) -> list[Step]:
    """Every step of checking ``proof``, in order; the proof holds when all are ok.
    A step that cannot run because an earlier one failed is left out."""
    problems = _form(proof)
    steps = [Step("form", not problems,
                  "; ".join(problems) if problems else
                  f"a seal version 2 proof of {proof['je_number']}")]
    if problems:
        return steps

    # The leaf names the entry the proof is for: its header is the first line,
    # 'H|je_id|je_number|je_date|period|batch_id|...'.
    fields = proof["leaf"].split("\n", 1)[0].split("|")
    names = (len(fields) > 5 and fields[0] == "H" and fields[2] == proof["je_number"]
             and fields[5] == str(proof["batch_id"]))
    steps.append(Step("leaf", names,
                      f"the leaf is the entry {proof['je_number']} of batch {proof['batch_id']}"
                      if names else
                      f"the leaf's header ({'|'.join(fields[:6])}) is not entry "
                      f"{proof['je_number']} of batch {proof['batch_id']}"))

    steps.append(_root_step("range root", leaf_hash(proof["leaf"].encode("utf-8")),
                            f"leaf {proof['leaf_index']} of {proof['range_size']}",
                            proof["leaf_index"], proof["range_size"], proof, "range_path",
                            "range_root"))
    steps.append(_root_step("batch root", leaf_hash(bytes.fromhex(proof["range_root"])),
                            f"range_root as range {proof['range_index']} of "
                            f"{proof['range_count']}", proof["range_index"],
                            proof["range_count"], proof, "batch_path", "batch_root"))

    if kept is not None:
        seq, digest = proof["audit_seq"], proof["audit_hash"]
        if seq > kept.seq:
            ok, detail = False, (f"the sealing row {seq} is after the kept head (row {kept.seq}): "
                                 "verify the chain up to it and keep a newer head first")
        elif seq == kept.seq and digest != kept.hash:
            ok, detail = False, (f"the sealing row {seq} is the kept head, whose hash is "
                                 f"{kept.hash}, not {digest}")
        elif seq == kept.seq:
            ok, detail = True, f"the sealing row {seq} is the kept head, with its hash"
        else:
            ok, detail = True, (f"the sealing row {seq} is before the kept head (row "
                                f"{kept.seq}); its hash is the chain's to show (monthend "
                                "verify --from-head/--to-head, or a head kept at that row)")
        steps.append(Step("head", ok, detail))
    return steps


def result(proof: dict[str, Any], kept: KeptHead | None) -> dict[str, Any]:
    steps = check(proof, kept)
    failed = next((s.step for s in steps if not s.ok), None)
    return {"ok": failed is None, "je_number": proof.get("je_number"), "failed_step": failed,
            "steps": [s.as_dict() for s in steps]}


def text(proof: dict[str, Any]) -> str:
    """A proof for a reader; ``--json`` gives the object itself."""
    return "\n".join([
        f"entry {proof['je_number']}, batch {proof['batch_id']}, seal version "
        f"{proof['seal_version']}",
        *(f"  {line}" for line in proof["leaf"].split("\n")),
        f"leaf {proof['leaf_index']} of {proof['range_size']} in range {proof['range_index']} "
        f"of {proof['range_count']}; range path {len(proof['range_path'])} hashes, batch path "
        f"{len(proof['batch_path'])}",
        f"range root {proof['range_root']}",
        f"batch root {proof['batch_root']}",
        f"sealed by audit row {proof['audit_seq']} (hash {proof['audit_hash']})",
        "check it with no database: monthend prove "
        f"{proof['je_number']} --json > proof.json && monthend check-proof proof.json",
    ])
