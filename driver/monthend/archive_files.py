"""What an archive of a period is made of: its files (one table's rows each,
gzip'd CSV with a header line, as ``COPY … TO STDOUT (FORMAT csv, HEADER)``
writes them), the manifest that lists them, and the readers that stream them
back while hashing the bytes read.

The files are read without monthend by any CSV reader (``zcat`` piped into
``psql \\copy``, Python's csv, a spreadsheet). A NULL is an empty unquoted
field, an empty text a quoted ``""``; every value is PostgreSQL's text form
of it (DateStyle ISO, TimeZone UTC, bytea as hex), which is what the
canonical texts of the seal are made of, so a verifier recomputes the seal
from the fields as they are written.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from monthend.errors import ConfigurationError

FORMAT = "monthend-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUFFIX = ".csv.gz"


@dataclass(frozen=True)
class ArchiveFile:
    """One file of an archive: the rows of ``table`` that belong to the period,
    in a fixed order (``select``, with ``%(period)s``, ``%(start)s``, ``%(end)s``
    and ``%(head_seq)s`` bound as literals). ``restored``: loaded back by
    ``monthend restore`` (the rows the let-go dropped); the rest stay in the
    database and are in the archive so that it verifies on its own."""

    stem: str
    table: str
    select: str
    restored: bool = False
    # The ledger's files are written range by range (``%(batch_id)s``,
    # ``%(lo)s``, ``%(hi)s``: one range's je_id block), in batch and range
    # order: each range's rows are sorted alone, found by the index on je_id,
    # instead of the whole month being sorted at once. ``select`` (the whole
    # period in the same order) gives the columns and the reference measure.
    by_range: str | None = None

    @property
    def name(self) -> str:
        return self.stem + SUFFIX


_RUNS_OF_PERIOD = "SELECT r.batch_id FROM batch.run AS r WHERE r.period = %(period)s"

# In the order they are written; the ledger's two files first (the bulk).
FILES: tuple[ArchiveFile, ...] = (
    ArchiveFile("journal_entry_header", "gl.journal_entry_header",
                "SELECT * FROM gl.journal_entry_header "
                "WHERE je_date BETWEEN %(start)s AND %(end)s ORDER BY batch_id, je_id",
                restored=True,
                by_range="SELECT * FROM gl.journal_entry_header "
                         "WHERE je_date BETWEEN %(start)s AND %(end)s AND batch_id = %(batch_id)s "
                         "AND je_id BETWEEN %(lo)s AND %(hi)s ORDER BY je_id"),
    ArchiveFile("journal_entry_line", "gl.journal_entry_line",
                "SELECT * FROM gl.journal_entry_line "
                "WHERE je_date BETWEEN %(start)s AND %(end)s ORDER BY batch_id, je_id, line_no",
                restored=True,
                by_range="SELECT * FROM gl.journal_entry_line "
                         "WHERE je_date BETWEEN %(start)s AND %(end)s AND batch_id = %(batch_id)s "
                         "AND je_id BETWEEN %(lo)s AND %(hi)s ORDER BY je_id, line_no"),
    ArchiveFile("source_claim", "batch.source_claim",
                "SELECT * FROM batch.source_claim WHERE period = %(period)s "
                "ORDER BY source_type, source_id, generation", restored=True),
    ArchiveFile("source_reversal", "batch.source_reversal",
                "SELECT * FROM batch.source_reversal WHERE period = %(period)s "
                "ORDER BY source_type, source_id, generation", restored=True),
    ArchiveFile("run", "batch.run",
                "SELECT * FROM batch.run WHERE period = %(period)s ORDER BY batch_id"),
    ArchiveFile("range", "batch.range",
                f"SELECT * FROM batch.range WHERE batch_id IN ({_RUNS_OF_PERIOD}) "
                "ORDER BY batch_id, range_no"),
    ArchiveFile("range_total", "batch.range_total",
                "SELECT t.* FROM batch.range_total AS t JOIN batch.range AS g USING (range_id) "
                f"WHERE g.batch_id IN ({_RUNS_OF_PERIOD}) ORDER BY t.range_id, t.currency"),
    ArchiveFile("control_total", "batch.control_total",
                f"SELECT * FROM batch.control_total WHERE batch_id IN ({_RUNS_OF_PERIOD}) "
                "ORDER BY batch_id, source_type, currency"),
    ArchiveFile("validation_result", "batch.validation_result",
                f"SELECT * FROM batch.validation_result WHERE batch_id IN ({_RUNS_OF_PERIOD}) "
                "ORDER BY validation_id"),
    ArchiveFile("dead_letter", "batch.dead_letter",
                f"SELECT * FROM batch.dead_letter WHERE batch_id IN ({_RUNS_OF_PERIOD}) "
                "ORDER BY dead_letter_id"),
    ArchiveFile("dead_letter_resolution", "batch.dead_letter_resolution",
                "SELECT * FROM batch.dead_letter_resolution "
                f"WHERE batch_id IN ({_RUNS_OF_PERIOD}) ORDER BY batch_id, dead_letter_id"),
    ArchiveFile("reversal_selection", "batch.reversal_selection",
                f"SELECT * FROM batch.reversal_selection WHERE batch_id IN ({_RUNS_OF_PERIOD}) "
                "ORDER BY batch_id, source_type, source_id"),
    ArchiveFile("accounting_period", "gl.accounting_period",
                "SELECT * FROM gl.accounting_period WHERE period = %(period)s"),
    ArchiveFile("period_balance", "gl.period_balance",
                "SELECT * FROM gl.period_balance WHERE period = %(period)s "
                'ORDER BY account_code COLLATE "C", currency COLLATE "C"'),
    ArchiveFile("period_seal_batch", "gl.period_seal_batch",
                "SELECT * FROM gl.period_seal_batch WHERE period = %(period)s "
                "ORDER BY seal_order"),
    ArchiveFile("period_check", "gl.period_check",
                "SELECT * FROM gl.period_check WHERE period = %(period)s ORDER BY check_id"),
    ArchiveFile("fx_rate", "gl.fx_rate",
                "SELECT * FROM gl.fx_rate WHERE period = %(period)s ORDER BY currency"),
    # The audit chain from its first row to the head when the archive was
    # written: the rows that seal the period and its batches, and every link
    # before them, so the chain is checked from genesis without the database.
    # The time is written as the chain's canonical text writes it.
    ArchiveFile("audit_log", "audit.log",
                "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                "AS at, event, batch_id, actor, payload::text AS payload, "
                "encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash "
                "FROM audit.log WHERE seq <= %(head_seq)s ORDER BY seq"),
)
FILE_BY_STEM = {f.stem: f for f in FILES}


class HashingReader(io.RawIOBase):
    """Reads a file, hashing (sha256) and counting every byte that passes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.bytes += n
        return n

    def drain(self) -> None:
        while self.readinto(bytearray(1 << 16)):
            pass


class FileRead:
    """One archive file read through once: its rows as dicts of the CSV's text
    fields (None for an empty field), then ``sha256``/``bytes``/``rows`` of
    what was read. A file that is not gzip'd CSV of its columns raises
    ``UnreadableFile``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self.complete = False
        self.columns: list[str] = []
        self._hashing: HashingReader | None = None

    def __iter__(self) -> Iterator[dict[str, str | None]]:
        for record in self.records():
            yield {c: (v if v != "" else None) for c, v in zip(self.columns, record, strict=True)}

    def records(self) -> Iterator[list[str]]:
        """The rows as lists of the CSV's fields ('' for NULL), in column order;
        ``columns`` is set before the first."""
        try:
            raw = self.path.open("rb")
        except OSError as exc:
            raise UnreadableFile(self.path.name, f"{self.path.name}: {exc}") from exc
        with raw:
            self._hashing = HashingReader(raw)
            try:
                with gzip.GzipFile(fileobj=io.BufferedReader(self._hashing, 1 << 20)) as gz, \
                        io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                    reader = csv.reader(text)
                    self.columns = next(reader, [])
                    width = len(self.columns)
                    for record in reader:
                        if len(record) != width:
                            raise csv.Error(f"record {self.rows + 1} has {len(record)} "
                                            f"fields, the header {width}")
                        self.rows += 1
                        yield record
                self._hashing.drain()
                self.complete = True
            except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
                # The whole file is hashed all the same: its sha256 is reported too.
                self.finish_hashing()
                raise UnreadableFile(self.path.name, f"{self.path.name}: {exc}") from exc

    def finish_hashing(self) -> None:
        """Hash the rest of a file whose reading stopped early."""
        if self._hashing is not None:
            with contextlib.suppress(OSError, ValueError):
                self._hashing.drain()

    @property
    def sha256(self) -> str:
        assert self._hashing is not None
        return self._hashing.sha256.hexdigest()

    @property
    def bytes(self) -> int:
        assert self._hashing is not None
        return self._hashing.bytes


class UnreadableFile(Exception):
    """An archive file that cannot be read as gzip'd CSV."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def read_manifest(directory: Path) -> tuple[dict[str, Any], str]:
    """The manifest of the archive in ``directory`` and the sha256 of its bytes
    (what PERIOD_ARCHIVED records)."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{directory} holds no archive: {MANIFEST} is missing (an archive whose writing "
            "was interrupted has none; `monthend archive` writes it again).") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is not the manifest of a monthend archive.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ConfigurationError(
            f"{path} is archive format {manifest.get('format_version')}; this monthend reads "
            f"format {FORMAT_VERSION}.")
    return manifest, hashlib.sha256(data).hexdigest()
