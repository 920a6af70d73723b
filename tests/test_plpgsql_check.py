"""Every PL/pgSQL function and procedure of the project passes plpgsql_check.

The server compiles a PL/pgSQL body only when it first runs, so a misspelt
column or a wrong type in a rarely taken branch would otherwise surface in
production, mid-run. plpgsql_check compiles and type-checks every statement.
"""

from __future__ import annotations

import psycopg
import pytest

SCHEMAS = ("gl", "batch", "audit", "subledger")

ROUTINES_SQL = """
SELECT p.oid::regprocedure::text AS routine,
       p.oid AS funcoid,
       p.prorettype = 'trigger'::regtype AS is_trigger,
       -- A trigger function is checked against a table that fires it; the
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
                               fatal_errors := false)
"""


def _format(routine: str, row: dict) -> str:
    parts = [f"{routine} line {row['lineno']} ({row['statement']}): "
             f"[{row['sqlstate']}] {row['message']}"]
    parts += [f"    {key}: {row[key]}" for key in ("detail", "hint", "query") if row[key]]
    return "\n".join(parts)


def test_no_plpgsql_check_errors(conn: psycopg.Connection) -> None:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
    except psycopg.errors.FeatureNotSupported as exc:  # pragma: no cover - environment
        pytest.fail(f"plpgsql_check is not installed on the test cluster ({exc}); "
                    "install the postgresql-15-plpgsql-check package (.ci/run does)")
    routines = conn.execute(ROUTINES_SQL, (list(SCHEMAS),)).fetchall()
    assert len(routines) > 10, f"expected the project's PL/pgSQL routines, found {routines}"

    errors: list[str] = []
    unchecked: list[str] = []
    for routine in routines:
        if routine["is_trigger"] and routine["relid"] is None:
            unchecked.append(routine["routine"])
            continue
        rows = conn.execute(CHECK_SQL, {"funcoid": routine["funcoid"],
                                        "relid": routine["relid"] or 0}).fetchall()
        errors += [_format(routine["routine"], row) for row in rows if row["level"] == "error"]

    assert not unchecked, ("trigger functions that no trigger uses cannot be checked: "
                           + ", ".join(unchecked))
    assert not errors, (f"plpgsql_check found {len(errors)} error(s):\n" + "\n".join(errors))
