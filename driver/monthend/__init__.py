"""monthend: the month-end general-ledger posting run, driven from Python, done in PostgreSQL."""

__version__ = "0.1.0"
