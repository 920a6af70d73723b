"""Compliance reports of a period: ``monthend report NAME --period P``.

Each report is one SQL function in ``sql/functions/`` (the integrity report's in
``audit/``; auditors call the same ones from psql); this module runs it in one
read-only REPEATABLE READ transaction, so every figure of a report comes from
one snapshot, and prints the rows as a table (rich on a terminal, plain columns
otherwise), one JSON document, or CSV.
Rows are streamed from the server: a period's large transactions can run to
millions at 10M source rows, and neither the JSON nor the CSV holds them in
memory. Amounts are written exactly, never as floats (in JSON as decimal strings,
monthend.jsonout's one policy): these are figures an auditor reconciles to the cent.

``run`` returns whether the report's checks hold; the CLI exits 1 when they do
not: a trial balance that does not balance, a committed batch that fails
verification, a large transaction claimed by a committed batch but missing
from the ledger, a period-end whose entries differ from the UPR change or the
FX gains they stand for.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

import psycopg
from rich.console import Console
from rich.table import Table

from monthend import db, jsonout
from monthend.errors import ConfigurationError
from monthend.queries import query

# The cash-reporting thresholds, in functional currency. The SQL functions'
# p_threshold defaults are the same numbers (tests/test_reports.py holds them
# equal), so psql and the CLI report the same rows.
DEFAULT_THRESHOLDS = {"large-transactions": Decimal("10000"), "high-value": Decimal("50000")}
FORMATS = ("table", "json", "csv")
# Rows fetched a round trip while streaming.
STREAM_ROWS = 2000
# A terminal table of more rows than this is not read; the rest are counted and
# the footer says how to get them all.
TERMINAL_ROWS = 1000
# Plain columns are sized on this many leading rows, then streamed.
PLAIN_SIZING_ROWS = 500

Row = dict[str, Any]


# --------------------------------------------------------------------------- values


def _text(value: Any) -> str:
    """A value as a person reads it in a table."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, Decimal):
        return f"{value:,f}" if value.is_finite() else str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value)
    return str(value)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(_csv_value(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Row], Any]
    numeric: bool = False


def _where(row: Row) -> str:
    """Where a large transaction went, in a few words."""
    status, batch = row["status"], row["batch_id"]
    if status == "POSTED":
        last = row["last_je_number"] or ""
        tail = last.rpartition("-")[2] if row["entries"] and row["entries"] > 1 else None
        return f"batch {batch}: {row['first_je_number']}" + (f"..{tail}" if tail else "")
    if status == "DEAD_LETTER":
        return f"{row['dead_letter_reason']} (batch {batch})"
    if status == "PENDING":
        return f"batch {batch}, not committed yet"
    if status == "REVERSED":
        return f"{row['first_je_number']}.. reversed by batch {batch}"
    if status == "NOT_IN_LEDGER":
        return f"batch {batch} committed it, no entries found"
    return ""


TRANSACTION_COLUMNS = (
    Column("date", lambda r: r["txn_date"]),
    Column("source", lambda r: r["source_type"]),
    Column("id", lambda r: r["source_id"], numeric=True),
    Column("policy", lambda r: r["policy_id"], numeric=True),
    Column("txn type", lambda r: r["txn_type"]),
    Column("lob", lambda r: r["line_of_business"]),
    Column("amount", lambda r: r["amount"], numeric=True),
    Column("cur", lambda r: r["currency"]),
    Column("functional", lambda r: r["functional_amount"] if r["fx_rate"] is not None
           else "no FX rate", numeric=True),
    Column("status", lambda r: r["status"]),
    Column("where", _where),
)

ACCOUNT_COLUMNS = (
    Column("account", lambda r: r["account_code"] if r["row_kind"] == "ACCOUNT" else "TOTAL"),
    Column("name", lambda r: r["account_name"] or r["detail"] or ""),
    Column("type", lambda r: r["account_type"]),
    Column("lines", lambda r: r["lines"], numeric=True),
    Column("debit", lambda r: r["debit"], numeric=True),
    Column("credit", lambda r: r["credit"], numeric=True),
    Column("balance", lambda r: r["balance"], numeric=True),
)

CHECK_COLUMNS = (
    Column("check", lambda r: r["row_kind"]),
    Column("of", lambda r: r["batch_id"] if r["row_kind"] == "BATCH" else r["currency"]),
    Column("debit", lambda r: r["debit"], numeric=True),
    Column("credit", lambda r: r["credit"], numeric=True),
    Column("difference", lambda r: r["balance"], numeric=True),
    Column("balanced", lambda r: r["balanced"]),
    Column("detail", lambda r: r["detail"]),
)

INTEGRITY_COLUMNS = (
    Column("batch", lambda r: r["batch_id"], numeric=True),
    Column("status", lambda r: r["status"]),
    Column("committed at", lambda r: r["committed_at"]),
    Column("entries", lambda r: r["entries"], numeric=True),
    Column("je numbers", lambda r: f"{r['first_je_number']}..{r['last_je_number']}"
           if r["first_je_number"] else ""),
    Column("digest", lambda r: (r["digest"] or "")[:16]),
    Column("seal", lambda r: r["seal_seq"], numeric=True),
    Column("seal hash", lambda r: (r["seal_hash"] or "")[:16]),
    Column("chain", lambda r: r["chain_ok"]),
    Column("numbers", lambda r: r["numbering_ok"]),
    Column("problems", lambda r: r["problems"], numeric=True),
    Column("ok", lambda r: r["ok"] if r["ok"] is not None else "n/a"),
)

REVERSAL_COLUMNS = (
    Column("reversing entry", lambda r: r["reversal_je_number"]),
    Column("date", lambda r: r["reversal_je_date"]),
    Column("batch", lambda r: r["reversal_batch_id"], numeric=True),
    Column("reverses", lambda r: r["original_je_number"]),
    Column("of batch", lambda r: r["original_batch_id"], numeric=True),
    Column("source", lambda r: f"{r['source_type']} {r['source_id']}"),
    Column("reason", lambda r: r["reason"]),
    Column("method", lambda r: r["method"]),
    Column("cur", lambda r: r["currency"]),
    Column("debit", lambda r: r["debit"], numeric=True),
    Column("credit", lambda r: r["credit"], numeric=True),
    Column("by", lambda r: r["started_by"]),
    Column("note", lambda r: r["note"] or ""),
)

UPR_COLUMNS = (
    Column("lob", lambda r: r["line_of_business"]),
    Column("cur", lambda r: r["currency"]),
    Column("written", lambda r: r["written"], numeric=True),
    Column("opening UPR", lambda r: r["opening_upr"], numeric=True),
    Column("closing UPR", lambda r: r["closing_upr"], numeric=True),
    Column("change", lambda r: r["upr_change"], numeric=True),
    Column("earned", lambda r: r["earned"], numeric=True),
    Column("written (functional)", lambda r: r["written_functional"], numeric=True),
    Column("closing UPR (functional)", lambda r: r["closing_upr_functional"], numeric=True),
    Column("change (functional)", lambda r: r["upr_change_functional"], numeric=True),
    Column("earned (functional)", lambda r: r["earned_functional"], numeric=True),
    Column("policies", lambda r: r["policies"], numeric=True),
    Column("booked", lambda r: r["booked_ok"]),
)

FX_COLUMNS = (
    Column("account", lambda r: r["account_code"]),
    Column("name", lambda r: r["account_name"] or ""),
    Column("cur", lambda r: r["currency"]),
    Column("balance", lambda r: r["balance"], numeric=True),
    Column("carried", lambda r: r["functional_carried"], numeric=True),
    Column("closing rate", lambda r: r["closing_rate"], numeric=True),
    Column("revalued", lambda r: r["functional_revalued"], numeric=True),
    Column("gain/loss", lambda r: r["gain"], numeric=True),
    Column("entry", lambda r: r["je_number"] or "none"),
    Column("booked", lambda r: r["booked_ok"]),
    Column("reversed", lambda r: (f"by {r['reversal_je_number']}" if r["reversed"]
                                  else "not yet" if r["reversed"] is False else "")),
)

# The UPR report's amounts, totalled per currency and in functional currency.
UPR_AMOUNTS = ("written", "opening_upr", "closing_upr", "upr_change", "earned")


@dataclass
class Summary:
    """Totals gathered while the rows stream past; the report's verdict."""

    kind: str
    rows: int = 0
    by_status: Counter = field(default_factory=Counter)
    functional_amount: Decimal = Decimal(0)
    unassessed: int = 0
    failed: list[str] = field(default_factory=list)
    total: Row | None = None
    committed: int = 0
    problems: int = 0
    batches: set[int] = field(default_factory=set)
    by_currency: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    functional: dict[str, Decimal] = field(default_factory=dict)
    opening: Row | None = None
    entries: int = 0
    not_reversed: int = 0

    def add(self, row: Row) -> None:
        self.rows += 1
        if self.kind == "transactions":
            self.by_status[row["status"]] += 1
            if row["functional_amount"] is None:
                self.unassessed += 1
            else:
                self.functional_amount += row["functional_amount"]
            if row["status"] == "NOT_IN_LEDGER":
                self.failed.append(f"{row['source_type']} {row['source_id']} is claimed by "
                                   f"committed batch {row['batch_id']} but has no entries")
        elif self.kind == "trial-balance":
            if row["row_kind"] == "TOTAL":
                self.total = row
            if row["balanced"] is False:
                what = {"TOTAL": "the period", "BATCH": f"batch {row['batch_id']}",
                        "CURRENCY": f"currency {row['currency']}"}[row["row_kind"]]
                self.failed.append(f"{what} does not balance: debits {row['debit']}, "
                                   f"credits {row['credit']} ({row['detail']})")
        elif self.kind == "register":
            self.batches.add(row["reversal_batch_id"])
            self.by_status[row["reason"]] += 1
        elif self.kind == "upr":
            self.opening = {"batch_id": row["opening_batch_id"], "period": row["opening_period"]}
            mine = self.by_currency.setdefault(row["currency"],
                                               dict.fromkeys(UPR_AMOUNTS, Decimal(0)))
            for key in UPR_AMOUNTS:
                mine[key] += row[key]
                self.functional[key] = (self.functional.get(key, Decimal(0))
                                        + row[f"{key}_functional"])
            if row["booked_ok"] is False:
                self.failed.append(
                    f"{row['line_of_business']} {row['currency']}: period-end batch "
                    f"{row['period_end_batch_id']} booked a change of {row['booked_change']} "
                    f"({row['booked_change_functional']} functional), the UPR moved by "
                    f"{row['upr_change']} ({row['upr_change_functional']} functional)")
        elif self.kind == "fx-revaluation":
            key = "gains" if row["gain"] > 0 else "losses"
            self.functional[key] = self.functional.get(key, Decimal(0)) + row["gain"]
            if row["je_number"] is not None:
                self.entries += 1
                if row["reversed"]:
                    self.batches.add(row["reversal_batch_id"])
                else:
                    self.not_reversed += 1
            if row["booked_ok"] is False:
                self.failed.append(
                    f"{row['account_code']} {row['currency']}: a gain of {row['gain']}, the "
                    f"ledger holds {row['booked'] if row['booked'] is not None else 'no entry'}")
        elif self.kind == "integrity":
            if row["status"] == "COMMITTED":
                self.committed += 1
                self.problems += row["problems"] or 0
            if row["ok"] is False:
                reasons = [name for name, good in (
                    ("seal missing or its digest differs", row["seal_digest_ok"]),
                    ("audit chain broken before the seal", row["chain_ok"]),
                    ("je_number block not contiguous", row["numbering_ok"]),
                ) if not good]
                if row["problems"]:
                    reasons.append(f"verify_batch: {', '.join(row['problem_codes'])}")
                self.failed.append(f"batch {row['batch_id']}: {'; '.join(reasons)}")

    @property
    def ok(self) -> bool:
        return not self.failed

    def document(self) -> dict[str, Any]:
        if self.kind == "transactions":
            return {"rows": self.rows, "by_status": dict(sorted(self.by_status.items())),
                    "functional_amount": self.functional_amount,
                    "without_fx_rate": self.unassessed, "problems": self.failed}
        if self.kind == "register":
            return {"entries": self.rows, "batches": sorted(self.batches),
                    "by_reason": dict(sorted(self.by_status.items())), "problems": self.failed}
        if self.kind == "upr":
            return {"rows": self.rows, "opening": self.opening,
                    "by_currency": dict(sorted(self.by_currency.items())),
                    "functional": {key: self.functional.get(key, Decimal(0))
                                   for key in UPR_AMOUNTS},
                    "problems": self.failed}
        if self.kind == "fx-revaluation":
            gains = self.functional.get("gains", Decimal(0))
            losses = self.functional.get("losses", Decimal(0))
            return {"rows": self.rows, "gains": gains, "losses": losses, "net": gains + losses,
                    "entries": self.entries, "reversal_batches": sorted(self.batches),
                    "not_reversed": self.not_reversed, "problems": self.failed}
        if self.kind == "trial-balance":
            total = self.total or {}
            return {"debit": total.get("debit"), "credit": total.get("credit"),
                    "balance": total.get("balance"), "problems": self.failed}
        return {"batches": self.rows, "committed": self.committed,
                "verify_batch_problems": self.problems, "problems": self.failed}


@dataclass(frozen=True)
class Report:
    name: str
    query: str
    kind: str  # transactions, trial-balance, integrity, register, upr, fx-revaluation
    title: str


REPORTS = {
    "large-transactions": Report("large-transactions", "report_large_transactions",
                                 "transactions", "Large transactions"),
    "high-value": Report("high-value", "report_high_value", "transactions",
                         "High-value transactions"),
    "trial-balance": Report("trial-balance", "report_trial_balance", "trial-balance",
                            "Trial balance"),
    "integrity": Report("integrity", "report_integrity", "integrity",
                        "Audit-trail integrity"),
    "reversals": Report("reversals", "report_reversals", "register", "Reversal register"),
    "upr": Report("upr", "report_upr", "upr", "Unearned premium reserve and earned premium"),
    "fx-revaluation": Report("fx-revaluation", "report_fx_revaluation", "fx-revaluation",
                             "FX revaluation of monetary balances"),
}
# The reports of a period's period-end batch (gl.period_end_batch): they are
# refused, saying what to do, for a period without one.
PERIOD_END_KINDS = ("upr", "fx-revaluation")
NAMES = tuple(REPORTS)


# --------------------------------------------------------------------------- reading


class RowStream:
    """A named query's rows, streamed in chunks; the first chunk is read on
    creation, so that a database error surfaces before anything is printed."""

    def __init__(self, conn: psycopg.Connection, name: str, **params: Any) -> None:
        self._cursor = conn.cursor()
        self._rows = self._generate(name, params)
        self._head: list[Row] = []
        for row in self._rows:
            self._head.append(row)
            break
        description = self._cursor.description or []
        self.columns = [col.name for col in description]

    def _generate(self, name: str, params: dict[str, Any]) -> Iterator[Row]:
        with db.wrap_errors():
            yield from self._cursor.stream(query(name), params, size=STREAM_ROWS)

    def __iter__(self) -> Iterator[Row]:
        yield from self._head
        self._head = []
        yield from self._rows


# --------------------------------------------------------------------------- writing


def _header_fields(report: Report, meta: Row, threshold: Decimal | None,
                   batch: Row | None = None, period_end: Row | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"report": report.name, "period": meta["period"],
                              "period_status": meta["status"],
                              "functional_currency": meta["functional_currency"]}
    if period_end is not None:
        fields.update({"period_end_batch_id": period_end["batch_id"],
                       "period_end_committed_at": period_end["finished_at"]})
    if batch is not None:
        fields.update({"batch_id": batch["batch_id"], "batch_mode": batch["mode"],
                       "batch_status": batch["status"]})
    if threshold is not None:
        fields["threshold"] = threshold
    return fields


def _write_json(out: TextIO, head: dict[str, Any], stream: RowStream,
                summary: Summary) -> None:
    out.write("{\n")
    for key, value in head.items():
        out.write(f"  {jsonout.value_text(key)}: {jsonout.value_text(value)},\n")
    out.write('  "rows": [')
    separator = "\n    "
    for row in stream:
        summary.add(row)
        out.write(separator + jsonout.value_text(row))
        separator = ",\n    "
    out.write("\n  ],\n" if summary.rows else "],\n")
    out.write(f'  "summary": {jsonout.value_text(summary.document())},\n')
    out.write(f'  "ok": {jsonout.value_text(summary.ok)}\n}}\n')


def _write_csv(out: TextIO, stream: RowStream, summary: Summary) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(stream.columns)
    for row in stream:
        summary.add(row)
        writer.writerow([_csv_value(row[c]) for c in stream.columns])


class _TableWriter:
    """Rows as a table: rich on a terminal, plain aligned columns otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console = Console(file=out, highlight=False)
        self.rich = self.console.is_terminal

    def rows(self, columns: tuple[Column, ...], rows: Iterator[Row],
             title: str | None = None) -> int:
        """Print rows under columns; return how many were not shown (terminal cap)."""
        if self.rich:
            return self._rich(columns, rows, title)
        self._plain(columns, rows, title)
        return 0

    def _rich(self, columns: tuple[Column, ...], rows: Iterator[Row],
              title: str | None) -> int:
        table = Table(title=title, title_justify="left", header_style="bold")
        for col in columns:
            table.add_column(col.header, justify="right" if col.numeric else "left")
        hidden = 0
        for shown, row in enumerate(rows):
            if shown < TERMINAL_ROWS:
                table.add_row(*(_text(col.value(row)) for col in columns))
            else:
                hidden += 1
        self.console.print(table)
        return hidden

    def _plain(self, columns: tuple[Column, ...], rows: Iterator[Row],
               title: str | None) -> None:
        if title:
            self.out.write(title + "\n")
        iterator = iter(rows)
        head = []
        for row in iterator:
            head.append([_text(col.value(row)) for col in columns])
            if len(head) >= PLAIN_SIZING_ROWS:
                break
        widths = [max([len(col.header)] + [len(cells[i]) for cells in head])
                  for i, col in enumerate(columns)]

        def line(cells: list[str]) -> str:
            return "  ".join(cell.rjust(w) if col.numeric else cell.ljust(w)
                             for cell, w, col in zip(cells, widths, columns, strict=True)
                             ).rstrip() + "\n"

        self.out.write(line([col.header for col in columns]))
        self.out.write(line(["-" * w for w in widths]))
        for cells in head:
            self.out.write(line(cells))
        for row in iterator:
            self.out.write(line([_text(col.value(row)) for col in columns]))

    def text(self, message: str) -> None:
        if self.rich:
            self.console.print(message)
        else:
            self.out.write(message + "\n")


def _counted(rows: Iterator[Row], summary: Summary) -> Iterator[Row]:
    for row in rows:
        summary.add(row)
        yield row


def _write_table(out: TextIO, report: Report, head: dict[str, Any], stream: RowStream,
                 summary: Summary) -> None:
    writer = _TableWriter(out)
    currency = head["functional_currency"]
    title = f"{report.title}, period {head['period']} ({head['period_status']})"
    if "batch_id" in head:
        what = "draft" if head["batch_mode"] == "DRAFT" else "batch"
        title += f", {what} {head['batch_id']} ({head['batch_status']})"
    if "period_end_batch_id" in head:
        title += f", period-end batch {head['period_end_batch_id']}"
    if report.kind == "transactions":
        title += f", at or above {_text(head['threshold'])} {currency}"
        hidden = writer.rows(TRANSACTION_COLUMNS, _counted(iter(stream), summary), title)
        if hidden:
            writer.text(f"... {hidden} more rows: use --csv or --json for all of them")
        statuses = ", ".join(f"{n} {status.lower().replace('_', ' ')}"
                             for status, n in sorted(summary.by_status.items()))
        writer.text(f"{summary.rows} transactions ({statuses or 'none'}); "
                    f"{_text(summary.functional_amount)} {currency} in all"
                    + (f"; {summary.unassessed} without an FX rate, listed unassessed"
                       if summary.unassessed else ""))
    elif report.kind == "trial-balance":
        rows = list(_counted(iter(stream), summary))
        accounts = [r for r in rows if r["row_kind"] in ("ACCOUNT", "TOTAL")]
        checks = [r for r in rows if r["row_kind"] in ("BATCH", "CURRENCY")]
        writer.rows(ACCOUNT_COLUMNS, iter(accounts), f"{title}, amounts in {currency}")
        writer.text("")
        writer.rows(CHECK_COLUMNS, iter(checks),
                    "Checks: each committed batch against its recorded totals; each "
                    "transaction currency")
        total = summary.total or {}
        writer.text(("BALANCED" if summary.ok else "NOT BALANCED")
                    + f": debits {_text(total.get('debit'))}, credits "
                      f"{_text(total.get('credit'))} {currency}")
    elif report.kind == "register":
        hidden = writer.rows(REVERSAL_COLUMNS, _counted(iter(stream), summary), title)
        if hidden:
            writer.text(f"... {hidden} more rows: use --csv or --json for all of them")
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.by_status.items()))
        writer.text(f"{summary.rows} reversing entries in {len(summary.batches)} batch(es)"
                    + (f" ({reasons})" if reasons else ""))
    elif report.kind == "upr":
        writer.rows(UPR_COLUMNS, _counted(iter(stream), summary), title)
        opening = summary.opening or {}
        writer.text(f"{summary.rows} line(s) of business and currency; opening UPR from "
                    + (f"period-end batch {opening['batch_id']} (period {opening['period']})"
                       if opening.get("batch_id") else "no earlier period-end (0)"))
        totals = ", ".join(f"{key.replace('_', ' ').replace('upr', 'UPR')} "
                           f"{_text(summary.functional.get(key, 0))}" for key in UPR_AMOUNTS)
        writer.text(f"In {currency}: {totals}")
    elif report.kind == "fx-revaluation":
        writer.rows(FX_COLUMNS, _counted(iter(stream), summary), title)
        doc = summary.document()
        reversal = (f"reversed by batch {', '.join(map(str, doc['reversal_batches']))}"
                    if doc["reversal_batches"] else "")
        if doc["not_reversed"]:
            reversal += ("; " if reversal else "") + (
                f"{doc['not_reversed']} not reversed yet (the next period's first batch "
                f"reverses them)")
        writer.text(f"{summary.rows} balance(s) revalued; in {currency}: gains "
                    f"{_text(doc['gains'])}, losses {_text(doc['losses'])}, net "
                    f"{_text(doc['net'])}; {doc['entries']} entr(ies)"
                    + (f", {reversal}" if reversal else ""))
    else:
        writer.rows(INTEGRITY_COLUMNS, _counted(iter(stream), summary), title)
        verdict = "OK" if summary.ok else "PROBLEMS FOUND"
        writer.text(f"{verdict}: {summary.committed} committed batch(es) of {summary.rows} "
                    f"verified; {summary.problems} verify_batch problem(s)")
    for failure in summary.failed:
        writer.text(f"  {failure}")


# --------------------------------------------------------------------------- entry point


# The reports that read one batch (a draft before it is finalized) with --batch.
BATCH_REPORTS = ("large-transactions", "high-value", "trial-balance")


def batch_of(conn: psycopg.Connection, batch_id: int, period: str | None) -> Row:
    """The batch a report or a diff reads, checked against the period asked for."""
    batch = db.call_one(conn, "report_batch", batch_id=batch_id)
    if batch is None:
        raise ConfigurationError(f"batch {batch_id} does not exist (a discarded draft is "
                                 f"gone); `monthend status` lists batches.")
    if period is not None and batch["period"] != period:
        raise ConfigurationError(f"batch {batch_id} is of period {batch['period']}, not "
                                 f"{period}; leave --period out or give its own.")
    if batch["status"] not in ("DRAFT", "SUPERSEDED", "COMMITTED"):
        raise ConfigurationError(f"batch {batch_id} is {batch['status']}: only a built draft "
                                 f"(superseded or not) or a committed batch has entries to "
                                 f"read.")
    return batch


def run(target: db.Target, name: str, period: str | None, fmt: str = "table",
        threshold: Decimal | None = None, out: TextIO | None = None,
        on_output: Callable[[], None] | None = None, batch_id: int | None = None) -> bool:
    """Print report ``name`` of ``period`` (or of batch ``batch_id``, a draft's
    included) in ``fmt``; return whether its checks hold.

    ``on_output`` is called once, just before the first character is written
    (the CLI then knows stdout carries the document)."""
    report = REPORTS[name]
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if batch_id is not None and name not in BATCH_REPORTS:
        raise ConfigurationError(f"--batch applies to {', '.join(BATCH_REPORTS)}, not to "
                                 f"{name}.")
    if batch_id is None and period is None:
        raise ConfigurationError("give the period (--period YYYY-MM), or a batch (--batch N).")
    if report.kind != "transactions" and threshold is not None:
        raise ConfigurationError(f"--threshold applies to large-transactions and high-value, "
                                 f"not to {name}.")
    if report.kind == "transactions":
        threshold = DEFAULT_THRESHOLDS[name] if threshold is None else threshold
        if threshold <= 0:
            raise ConfigurationError(f"--threshold must be above zero, not {threshold}.")
    out = out or sys.stdout
    summary = Summary(report.kind)
    with db.connect(target, autocommit=False) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        batch = batch_of(conn, batch_id, period) if batch_id is not None else None
        if batch is not None and batch["status"] == "SUPERSEDED" and name != "trial-balance":
            raise ConfigurationError(
                f"draft {batch_id} was superseded: its rows went to the newer draft, so "
                f"{name} of it would show none; read the newer draft, or compare the two "
                f"with `monthend diff --draft NEW --against-draft {batch_id}`.")
        period = batch["period"] if batch is not None else period
        meta = db.call_one(conn, "report_period", period=period)
        if meta is None:
            raise ConfigurationError(
                f"period {period} is not in gl.accounting_period; `monthend generate` or the "
                "upstream load opens a period.")
        params: dict[str, Any] = {"period": period}
        if report.kind == "transactions":
            params["threshold"] = threshold
        if name in BATCH_REPORTS:
            params["batch_id"] = batch_id
        # Read before the stream, which holds the connection until it ends. None
        # when the period has no period-end: the report's function then refuses it.
        period_end = (db.call_one(conn, "report_period_end", period=period)
                      if report.kind in PERIOD_END_KINDS else None)
        stream = RowStream(conn, report.query, **params)
        head = _header_fields(report, meta, threshold, batch, period_end)
        if on_output:
            on_output()
        if fmt == "json":
            _write_json(out, head, stream, summary)
        elif fmt == "csv":
            _write_csv(out, stream, summary)
        else:
            _write_table(out, report, head, stream, summary)
        out.flush()
        conn.rollback()
    return summary.ok


# --------------------------------------------------------------------------- diff

DIFF_COLUMNS = (
    Column("account", lambda r: r["account_code"]),
    Column("name", lambda r: r["account_name"] or ""),
    Column("cur", lambda r: r["currency"]),
    Column("net", lambda r: r["net"], numeric=True),
    Column("against", lambda r: r["against_net"], numeric=True),
    Column("change", lambda r: r["change"], numeric=True),
    Column("net (functional)", lambda r: r["functional_net"], numeric=True),
    Column("against (functional)", lambda r: r["against_functional_net"], numeric=True),
    Column("change (functional)", lambda r: r["functional_change"], numeric=True),
)


def diff(target: db.Target, batch_id: int, against_period: str | None = None,
         against_batch_id: int | None = None, fmt: str = "table",
         out: TextIO | None = None, on_output: Callable[[], None] | None = None
         ) -> dict[str, Any]:
    """Compare what batch ``batch_id`` (a draft, usually) posts with another
    batch or draft, or with what a period posted: per account and currency,
    largest functional change first, with totals. Returns the document."""
    if (against_period is None) == (against_batch_id is None):
        raise ConfigurationError("compare with one of --against PERIOD, --against-batch N or "
                                 "--against-draft N.")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    out = out or sys.stdout
    with db.connect(target, autocommit=False) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        mine = batch_of(conn, batch_id, None)
        theirs = batch_of(conn, against_batch_id, None) if against_batch_id else None
        if against_period is not None and db.call_one(
                conn, "report_period", period=against_period) is None:
            raise ConfigurationError(f"period {against_period} is not in gl.accounting_period.")
        meta = db.call_one(conn, "report_period", period=mine["period"])
        rows = db.call(conn, "accounting_diff", batch_id=batch_id,
                       against_batch_id=against_batch_id, against_period=against_period)
        conn.rollback()
    by_currency: dict[str, Decimal] = {}
    for row in rows:
        by_currency[row["currency"]] = by_currency.get(row["currency"], Decimal(0)) + row["change"]
    document = {
        "batch_id": batch_id, "batch_mode": mine["mode"], "batch_status": mine["status"],
        "period": mine["period"],
        "against": ({"period": against_period} if against_period is not None else
                    {"batch_id": theirs["batch_id"], "batch_mode": theirs["mode"],
                     "batch_status": theirs["status"], "period": theirs["period"]}),
        "functional_currency": meta["functional_currency"],
        "rows": rows,
        "totals": {"rows": len(rows),
                   "functional_change": sum((r["functional_change"] for r in rows), Decimal(0)),
                   "change_by_currency": dict(sorted(by_currency.items()))},
    }
    if on_output:
        on_output()
    if fmt == "json":
        out.write(jsonout.dumps(document) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        columns = list(rows[0]) if rows else [c.header for c in DIFF_COLUMNS]
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in columns])
    else:
        table = _TableWriter(out)

        def side(batch: Row) -> str:
            what = "draft" if batch["mode"] == "DRAFT" else "batch"
            return f"{what} {batch['batch_id']} ({batch['period']})"

        title = (f"{side(mine)} against "
                 + (f"period {against_period}" if theirs is None else side(theirs)))
        table.rows(DIFF_COLUMNS, iter(rows), title)
        totals = document["totals"]
        changes = ", ".join(f"{cur} {_text(v)}" for cur, v in
                            totals["change_by_currency"].items()) or "none"
        table.text(f"{totals['rows']} account/currency row(s) differ; change by currency: "
                   f"{changes}; functional change {_text(totals['functional_change'])} "
                   f"{meta['functional_currency']}")
    out.flush()
    return document
