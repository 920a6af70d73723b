"""The one JSON policy of every document the CLI prints (``--json``, ``report --json``).

Money is exact. A ``Decimal`` (every PostgreSQL ``numeric``) becomes a JSON
string of its exact digits in plain notation: ``Decimal('1E+2')`` is ``"100"``,
``Decimal('0.10')`` stays ``"0.10"``. Never a float: 1234567890123.4501 as a
float is 1234567890123.4502, and a JSON number with all its digits is read as a
float by most parsers anyway. Consumers read the string with their decimal type.
Integers stay JSON numbers, dates and times are ISO 8601 strings, floats (the
driver's own measurements: seconds, rates) stay numbers, anything else is its
``str()``.

``dumps`` encodes a whole document; ``value_text`` encodes one value the same
way, for writers that stream rows (``report``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any


def decimal_text(value: Decimal) -> str:
    """The exact digits of a decimal, never in exponent notation (NaN stays 'NaN')."""
    return format(value, "f")


def default(value: Any) -> Any:
    """``json.dumps(default=...)``: what the json module cannot encode itself."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def dumps(document: Any, indent: int | None = 2) -> str:
    """A whole document as JSON text."""
    return json.dumps(document, default=default, indent=indent)


def value_text(value: Any) -> str:
    """One value as compact JSON text, as ``dumps(value, indent=None)`` writes it."""
    return _ENCODERS.get(type(value), _other)(value)


_string = json.encoder.encode_basestring_ascii


def _other(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k))}: {value_text(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(value, default=default)


# Dispatch on the exact type: a report streams millions of values through here.
_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: _string,
    int: str,
    bool: lambda v: "true" if v else "false",
    type(None): lambda _v: "null",
    Decimal: lambda v: _string(format(v, "f")),
    date: lambda v: _string(v.isoformat()),
    datetime: lambda v: _string(v.isoformat()),
}
