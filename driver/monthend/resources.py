"""Where the SQL tree and the embedded cluster's home are, installed or in a checkout.

The SQL tree (``sql/``, ``procedures/``, ``audit/``, ``partitions/``) lives at the top
of the repository, because the layout shows the design. A wheel carries the same
folders as the package data ``monthend.schema`` (pyproject.toml maps them at build
time), found here with ``importlib.resources``. A checkout (an editable install, the
test suite) reads the folders themselves, so an edit is seen without a rebuild.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from monthend.errors import ConfigurationError

# The folder that holds this package in a checkout: driver/monthend -> the repository.
_CHECKOUT = Path(__file__).resolve().parents[2]
_MARKER = Path("sql") / "migrations"


def checkout_root() -> Path | None:
    """The repository this package runs from, or None when it is installed."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / _MARKER).is_dir():
        return _CHECKOUT
    return None


def schema_root() -> Path:
    """The directory that holds sql/, procedures/, audit/ and partitions/."""
    root = checkout_root()
    if root is not None:
        return root
    packaged = importlib.resources.files("monthend") / "schema"
    # A wheel installs as plain files, so the resource is a real directory
    # (jinja2 and the migration loader need paths, not a zip member).
    if isinstance(packaged, Path) and (packaged / _MARKER).is_dir():
        return packaged
    raise ConfigurationError(
        "The monthend package has no SQL tree: it was installed from something other than "
        "its wheel or a checkout. Reinstall it with `pip install monthend-<version>.whl`."
    )


def default_home() -> Path:
    """Where the embedded cluster lives: ``MONTHEND_HOME``; else ``.monthend`` in a
    checkout; else the user's data directory (``$XDG_DATA_HOME/monthend``, by default
    ``~/.local/share/monthend``)."""
    override = os.environ.get("MONTHEND_HOME")
    if override:
        return Path(override).resolve()
    root = checkout_root()
    if root is not None:
        return root / ".monthend"
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).resolve() / "monthend"
