"""An independent re-implementation of seal version 2, in plain Python, from
the byte format in docs/audit.md alone: the canonical texts formatted here
from the ledger's column values (not by the database's functions), the Merkle
Tree Hash written top-down as RFC 6962 §2.1 defines it (the database builds it
bottom-up, level by level), inclusion paths as §2.1.1 defines them."""

from __future__ import annotations

import datetime
import hashlib
from decimal import Decimal
from typing import Any

import psycopg


def _text(value: Any) -> str | None:
    """A field as the canonical text writes it; None is left out."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def _join(*fields: Any) -> str:
    return "|".join(t for t in map(_text, fields) if t is not None)


def header_text(h: dict[str, Any]) -> str:
    return _join("H", h["je_id"], h["je_number"], h["je_date"], h["period"], h["batch_id"],
                 h["source_type"], h["source_id"], h["je_seq"], h["currency"], h["fx_rate"],
                 h["description"], h["source_amount"],
                 None if h["reverses_je_id"] is None else f"R{h['reverses_je_id']}",
                 None if h["source_date"] is None else f"S{h['source_date'].isoformat()}")


def line_text(line: dict[str, Any]) -> str:
    return _join("L", line["line_no"], line["account_code"], line["debit"], line["credit"],
                 line["functional_debit"], line["functional_credit"])


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash of a list of leaves (their bytes)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    n = len(leaves)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def batch_leaves(conn: psycopg.Connection, batch_id: int) -> list[list[bytes]]:
    """Each range's leaves (its entries' canonical bytes in je_id order), in
    range order, read from the ledger."""
    run = conn.execute("SELECT je_id_base FROM batch.run WHERE batch_id = %s",
                       (batch_id,)).fetchone()
    ranges = conn.execute("SELECT je_offset, je_count FROM batch.range WHERE batch_id = %s "
                          "ORDER BY range_no", (batch_id,)).fetchall()
    headers = conn.execute("SELECT * FROM gl.journal_entry_header WHERE batch_id = %s",
                           (batch_id,)).fetchall()
    lines: dict[int, list[dict[str, Any]]] = {}
    for line in conn.execute("SELECT * FROM gl.journal_entry_line WHERE batch_id = %s",
                             (batch_id,)).fetchall():
        lines.setdefault(line["je_id"], []).append(line)
    by_id = {h["je_id"]: h for h in headers}
    result = []
    for r in ranges:
        lo = run["je_id_base"] + r["je_offset"]
        leaves = []
        for je_id in range(lo, lo + r["je_count"]):
            texts = [header_text(by_id[je_id])] + [
                line_text(x) for x in sorted(lines.get(je_id, []), key=lambda x: x["line_no"])]
            leaves.append("\n".join(texts).encode("utf-8"))
        result.append(leaves)
    return result


def batch_root(range_leaves: list[list[bytes]]) -> tuple[bytes, list[bytes]]:
    """The batch root and the range roots."""
    roots = [mth(leaves) for leaves in range_leaves]
    return mth(roots), roots
