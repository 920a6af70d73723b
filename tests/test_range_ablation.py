"""tools/range_ablation.py derives its twins from the live procedure text:
each twin must still be found, be valid PL/pgSQL, and lack exactly its part."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pglast
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "range_ablation.py"


def _tool():
    spec = importlib.util.spec_from_file_location("range_ablation", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()
SOURCE = tool.PROCEDURE_FILE.read_text()


@pytest.mark.parametrize("part", sorted(tool.PARTS))
def test_twin_is_valid_plpgsql_without_its_part(part: str) -> None:
    twin = tool.twin_of(SOURCE, part)
    assert f"PROCEDURE batch.process_range_without_{part}(" in twin
    assert "GRANT" not in twin
    pglast.parse_plpgsql(twin)
    if part == "seal":
        assert "audit.canonical_line_text(" not in twin and "sha256(convert_to" not in twin
        assert "PERFORM 1 WHERE false AND audit.append('RANGE_DONE'" in twin
    elif part == "balance_check":
        assert "HAVING sum(d.debit - d.credit)" not in twin
    else:
        assert "ORDER BY x.je_id, x.line_no" not in twin
    # Everything else is untouched: the twin is the procedure minus one part.
    assert "INSERT INTO batch.%2$I" in twin and "record_check" in twin


def test_a_changed_procedure_is_refused_not_measured_wrongly() -> None:
    with pytest.raises(SystemExit, match="balance_check"):
        tool.twin_of(SOURCE.replace("HAVING sum(d.debit - d.credit)", "HAVING true"),
                     "balance_check")
