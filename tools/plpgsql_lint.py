"""Lint every PL/pgSQL function and procedure of monthend with plpgsql_check.

The server compiles a PL/pgSQL body only when it first runs, so a misspelt
column or a wrong type in a rarely taken branch would otherwise surface in
production, mid-run; plpgsql_check compiles and type-checks every statement.

    python tools/plpgsql_lint.py [--dsn DSN] [--warnings]

Uses the same database as the monthend CLI (--dsn, DATABASE_URL, PG*, else the
embedded cluster), creates the extension if it is missing, prints one line per
finding and exits 1 when there is an error (or, with --warnings, any finding).
The test suite calls lint() on every test run.
"""

from __future__ import annotations

import argparse
import sys

import psycopg
from psycopg.rows import dict_row

SCHEMAS = ("gl", "batch", "audit", "subledger")

ROUTINES_SQL = """
SELECT p.oid::regprocedure::text AS routine,
       p.oid AS funcoid,
       p.prorettype = 'trigger'::regtype AS is_trigger,
       -- A trigger function is checked against a table that fires it: the
       -- parent table rather than one of its partition clones.
       (SELECT t.tgrelid FROM pg_trigger AS t
         WHERE t.tgfoid = p.oid
         ORDER BY t.tgparentid <> 0, t.tgrelid LIMIT 1) AS relid
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
JOIN pg_language AS l ON l.oid = p.prolang
WHERE l.lanname = 'plpgsql' AND n.nspname = ANY(%s)
ORDER BY 1
"""

CHECK_SQL = """
SELECT level, lineno, statement, sqlstate, message, detail, hint, query
FROM plpgsql_check_function_tb(%(funcoid)s::regprocedure, %(relid)s::regclass,
                               fatal_errors := false,
                               extra_warnings := %(warnings)s,
                               performance_warnings := %(warnings)s)
"""


class LintSetupError(Exception):
    """plpgsql_check is not available on the server."""


def _format(routine: str, row: dict) -> str:
    parts = [f"{row['level']}: {routine} line {row['lineno']} ({row['statement']}): "
             f"[{row['sqlstate']}] {row['message']}"]
    parts += [f"    {key}: {row[key]}" for key in ("detail", "hint", "query") if row[key]]
    return "\n".join(parts)


def lint(conn: psycopg.Connection, warnings: bool = False) -> tuple[int, list[str], list[str]]:
    """Check every routine. Returns (routines checked, errors, other findings).

    A trigger function no trigger uses cannot be checked and counts as an error.
    """
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
    except psycopg.errors.FeatureNotSupported as exc:
        raise LintSetupError(
            f"plpgsql_check is not installed on the server ({exc.diag.message_primary}); "
            "install the postgresql-15-plpgsql-check package (.ci/run does)") from exc
    with conn.cursor(row_factory=dict_row) as cur:
        routines = cur.execute(ROUTINES_SQL, (list(SCHEMAS),)).fetchall()
        errors: list[str] = []
        others: list[str] = []
        for routine in routines:
            if routine["is_trigger"] and routine["relid"] is None:
                errors.append(f"error: {routine['routine']}: trigger function that no "
                              "trigger uses, so it cannot be checked")
                continue
            rows = cur.execute(CHECK_SQL, {"funcoid": routine["funcoid"],
                                           "relid": routine["relid"] or 0,
                                           "warnings": warnings}).fetchall()
            for row in rows:
                (errors if row["level"] == "error" else others).append(
                    _format(routine["routine"], row))
    return len(routines), errors, others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None, help="libpq connection string (default: as "
                        "the monthend CLI resolves it)")
    parser.add_argument("--warnings", action="store_true",
                        help="also report warnings and performance hints, and fail on them")
    args = parser.parse_args()

    from monthend import db

    target = db.resolve_target(args.dsn)
    db.ensure_started(target)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        try:
            checked, errors, others = lint(conn, warnings=args.warnings)
        except LintSetupError as exc:
            print(f"plpgsql_lint: {exc}", file=sys.stderr)
            return 2
    for line in errors + others:
        print(line)
    print(f"{checked} routines checked: {len(errors)} error(s), {len(others)} other finding(s)")
    return 1 if errors or (args.warnings and others) else 0


if __name__ == "__main__":
    sys.exit(main())
