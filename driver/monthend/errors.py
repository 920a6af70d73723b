"""The project's own exceptions; the CLI maps each to an exit code and a message."""


class MonthendError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class ConfigurationError(MonthendError):
    """Bad usage or configuration: the user must change something before retrying."""

    exit_code = 2


class RunConflict(MonthendError):
    """Another batch holds the period, or the batch is in a state that forbids the command."""

    exit_code = 2


class RunFailed(MonthendError):
    """The run, or a check, failed; the database says why."""

    exit_code = 1


class MigrationError(MonthendError):
    """A migration file is invalid or conflicts with what the database has applied."""

    exit_code = 2
