"""Settings for the batch window from the machine's size (``monthend tune``).

The numbers are computed here; the fragment, with the reason for every line,
is the jinja2 template ``templates/batch_window.conf.j2`` (edit it to change
what is said or emitted). The rules of thumb: shared_buffers 25% of RAM and
effective_cache_size 75%; work_mem so that every range worker's sorts and
hashes fit in a quarter of RAM; WAL and checkpoints sized so that the bulk
writes of the run trigger checkpoints by time, not by volume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

from monthend.embedded import SERVER_MALLOC_ENVIRONMENT
from monthend.errors import ConfigurationError

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
TB = 1024 * GB
UNITS = {"": GB, "K": KB, "M": MB, "G": GB, "T": TB}


def parse_size(text: str) -> int:
    """'256GB', '256G', '24GiB', '512MB', '1TB' or a bare number of GB, in bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise ConfigurationError(f"{text!r} is not a memory size; write e.g. 256GB or 512MB.")
    size = int(float(match.group(1)) * UNITS[match.group(2)])
    if size < 1 * GB:
        raise ConfigurationError(f"{text} of RAM is too little to run a month-end batch.")
    return size


def pg_size(size: float) -> str:
    """A size as postgresql.conf takes it: whole GB when exact, else MB."""
    size = int(size)
    if size >= GB and size % GB == 0:
        return f"{size // GB}GB"
    return f"{max(1, size // MB)}MB"


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _round_mb(size: float) -> int:
    return int(size // MB) * MB


@dataclass(frozen=True)
class Machine:
    ram: int
    cores: int
    workers: int
    storage: str = "ssd"
    day_connections: int = 200


def settings(machine: Machine) -> dict[str, Any]:
    """The window's values and the day-time values to restore, by setting name."""
    ram, cores, workers = machine.ram, machine.cores, machine.workers
    # The driver, the monitor, watchers, the metrics exporter and DBAs besides
    # the workers; never below what a small installation expects.
    max_connections = max(50, workers + 30)
    shared_buffers = _round_mb(ram * 0.25)
    max_wal = _round_mb(_clamp(ram / 4, 8 * GB, 64 * GB))
    parallel = int(_clamp(cores // 4, 2, 8))
    window = {
        "shared_buffers": pg_size(shared_buffers),
        "huge_pages": "try",
        "effective_cache_size": pg_size(_round_mb(ram * 0.75)),
        "work_mem": pg_size(_round_mb(_clamp(ram * 0.25 / (workers * 2), 16 * MB, 2 * GB))),
        "maintenance_work_mem": pg_size(_round_mb(_clamp(ram * 0.05, 256 * MB, 8 * GB))),
        "max_connections": max_connections,
        "max_worker_processes": max(8, cores + 4),
        "max_parallel_workers": cores,
        "max_parallel_workers_per_gather": parallel,
        "max_parallel_maintenance_workers": parallel,
        "max_wal_size": pg_size(max_wal),
        "min_wal_size": pg_size(_round_mb(max_wal / 4)),
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": 0.9,
        "wal_buffers": "64MB" if shared_buffers >= 4 * GB else "-1",
        "wal_compression": "on",
        "synchronous_commit": "on",
        "wal_writer_delay": "10ms",
        "effective_io_concurrency": 200 if machine.storage == "ssd" else 2,
        "random_page_cost": 1.1 if machine.storage == "ssd" else 4.0,
        "jit": "off",
        "idle_in_transaction_session_timeout": "10min",
        "shared_preload_libraries": "'pg_stat_statements'",
        "track_io_timing": "on",
        "log_lock_waits": "on",
        "log_checkpoints": "on",
        "log_temp_files": "64MB",
    }
    day_work_mem = _clamp(ram * 0.25 / (machine.day_connections * 2), 4 * MB, 64 * MB)
    restore = {
        "work_mem": pg_size(_round_mb(day_work_mem)),
        "maintenance_work_mem": pg_size(_round_mb(_clamp(ram * 0.05, 64 * MB, 2 * GB))),
        "max_connections": machine.day_connections,
        "max_parallel_workers_per_gather": 2,
        "max_wal_size": pg_size(_round_mb(_clamp(ram / 16, 1 * GB, 16 * GB))),
        "min_wal_size": pg_size(_round_mb(_clamp(ram / 64, 256 * MB, 4 * GB))),
        "checkpoint_timeout": "5min",
        "wal_writer_delay": "200ms",
        "jit": "on",
        "idle_in_transaction_session_timeout": "0",
    }
    return {"window": window, "restore": restore, "max_connections": max_connections}


def render(machine: Machine, restore: bool = False) -> str:
    """The postgresql.conf fragment: the window's settings, or those to restore after it."""
    template_text = resources.files("monthend").joinpath(
        "templates/batch_window.conf.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    values = settings(machine)
    return env.from_string(template_text).render(
        m=machine, w=values["window"], r=values["restore"], restore=restore,
        server_environment=SERVER_MALLOC_ENVIRONMENT,
        ram=pg_size(machine.ram))
