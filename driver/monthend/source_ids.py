"""The source rows a reversal is limited to: a CSV file of ``source_type,source_id``."""

from __future__ import annotations

import csv
from pathlib import Path

from monthend.errors import ConfigurationError

SOURCE_TYPES = ("PREMIUM", "CLAIM")


def read_source_ids(path: Path) -> tuple[list[str], list[int]]:
    """Parse the file; a header row ``source_type,source_id`` is optional. A bad line
    is refused with its number, before anything reaches the database."""
    types: list[str] = []
    ids: list[int] = []
    try:
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                if number == 1 and [c.lower() for c in cells] == ["source_type", "source_id"]:
                    continue
                if len(cells) != 2 or cells[0] not in SOURCE_TYPES or not cells[1].isdigit():
                    raise ConfigurationError(
                        f"{path}:{number}: {','.join(row)!r} is not a source row: each line is "
                        f"source_type,source_id with source_type one of "
                        f"{', '.join(SOURCE_TYPES)}, e.g. PREMIUM,1042. Nothing was reversed.")
                types.append(cells[0])
                ids.append(int(cells[1]))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    if not ids:
        raise ConfigurationError(f"{path} names no source rows. Nothing was reversed.")
    return types, ids
