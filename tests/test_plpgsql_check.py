"""Every PL/pgSQL function and procedure of the project passes plpgsql_check
(tools/plpgsql_lint.py, which DBAs can run against their own database)."""

from __future__ import annotations

import psycopg
import pytest

from plpgsql_lint import LintSetupError, lint


def test_no_plpgsql_check_errors(conn: psycopg.Connection) -> None:
    try:
        checked, errors, _others = lint(conn)
    except LintSetupError as exc:  # pragma: no cover - environment
        pytest.fail(str(exc))
    assert checked > 10, f"expected the project's PL/pgSQL routines, found {checked}"
    assert not errors, f"plpgsql_check found {len(errors)} error(s):\n" + "\n".join(errors)
