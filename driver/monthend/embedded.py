"""A project-local PostgreSQL cluster that monthend initializes and starts itself.

PostgreSQL refuses to run as root, so when this process is root every server
binary runs as the unprivileged ``postgres`` system user (``runuser``), and the
data directory is handed to that user. The same code serves the CLI, ``make
demo`` and the test suite.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from monthend.errors import ConfigurationError
from monthend.resources import default_home

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                     "/usr/lib/postgresql/17/bin")
SERVER_USER = "postgres"

# Settings for the batch window on a small machine. Durability stays on
# (fsync, synchronous_commit, wal_level=replica): this is how a bank runs.
DURABLE_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "100",
    "shared_buffers": "'512MB'",
    "work_mem": "'64MB'",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'15min'",
    "checkpoint_completion_target": "0.9",
    "wal_compression": "on",
    # The WAL writer flushes the ranges' WAL as it comes, so a range's commit
    # has little left to flush: 1.9 ms median between a range's end and the
    # next one's start at 1M rows, against 3.4 ms at the default 200ms.
    "wal_writer_delay": "'10ms'",
    "shared_preload_libraries": "'pg_stat_statements'",
    "track_io_timing": "on",
    "log_min_messages": "warning",
}

# The test cluster trades durability for speed; crash recovery still works
# because an immediate shutdown does not lose what the kernel already has.
TEST_SETTINGS = {
    **DURABLE_SETTINGS,
    "shared_buffers": "'256MB'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


# glibc malloc for the server's processes. By default glibc returns freed
# memory at the top of the heap to the kernel (and serves blocks over 128 kB,
# later up to 32 MB, with fresh mmaps), so every range statement faults its
# hash tables, sorts and tuplestores in again: 21,500 minor page faults a
# range measured, against 3,400 with the thresholds below, and a range 10-15%
# faster. Allocations under 32 MB come from the heap, and a backend keeps up
# to 256 MB it freed for its next statement. `monthend tune` prints the same
# for a server monthend does not start.
SERVER_MALLOC_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(256 * 1024 * 1024),
    "MALLOC_TOP_PAD_": str(16 * 1024 * 1024),
}


def pg_bin_dir() -> Path:
    """Directory of the PostgreSQL server binaries (``MONTHEND_PG_BIN`` overrides)."""
    override = os.environ.get("MONTHEND_PG_BIN")
    candidates = (override,) if override else PG_BIN_CANDIDATES
    for candidate in candidates:
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ConfigurationError(
        "PostgreSQL server binaries (pg_ctl, initdb) were not found. Install PostgreSQL 15+ "
        "server packages, set MONTHEND_PG_BIN to their directory, or point monthend at an "
        "existing server with --dsn or DATABASE_URL."
    )


@dataclass(frozen=True)
class EmbeddedCluster:
    """One local cluster: a data directory, a port, and a superuser named ``postgres``."""

    data_dir: Path
    port: int
    settings: dict[str, str]
    dbname: str = "monthend"

    @classmethod
    def default(cls) -> EmbeddedCluster:
        port = int(os.environ.get("MONTHEND_PORT", "54329"))
        return cls(default_home() / "pgdata", port, DURABLE_SETTINGS)

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn(self, dbname: str | None = None) -> str:
        return f"host=127.0.0.1 port={self.port} user={SERVER_USER} dbname={dbname or self.dbname}"

    def _as_server_user(self, *args: str) -> list[str]:
        if os.geteuid() != 0:
            return list(args)
        return ["runuser", "-u", SERVER_USER, "--", *args]

    def _run(self, *args: str,
             environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # `env` after runuser, so the variables reach the server whoever starts it.
        assignments = [f"{name}={value}" for name, value in (environment or {}).items()]
        cmd = self._as_server_user(*(["env", *assignments] if assignments else []), *args)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ConfigurationError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}\nSee {self.log_file}."
            )
        return proc

    def _prepare_directories(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError as exc:
                raise ConfigurationError(
                    "Running as root needs the unprivileged 'postgres' system user to own "
                    "the embedded cluster; create it (useradd --system postgres) or run as "
                    "another user."
                ) from exc
            for path in (self.data_dir.parent,):
                os.chown(path, account.pw_uid, account.pw_gid)
            # The server user must be able to reach its directory.
            for parent in self.data_dir.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initialize(self) -> None:
        self._prepare_directories()
        bindir = pg_bin_dir()
        self._run(str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER,
                  "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
        conf = self.data_dir / "postgresql.auto.conf"
        lines = [f"{key} = {value}\n" for key, value in self.settings.items()]
        lines.append(f"port = {self.port}\n")
        with conf.open("a") as handle:
            handle.write("# written by monthend for its embedded cluster\n")
            handle.writelines(lines)

    def is_running(self) -> bool:
        bindir = pg_bin_dir()
        cmd = self._as_server_user(str(bindir / "pg_ctl"), "status", "-D", str(self.data_dir))
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0

    def start(self) -> bool:
        """Initialize and start the cluster if needed; True when this call started it."""
        if not self.is_initialized():
            self.initialize()
        if self.is_running():
            return False
        self._prepare_directories()
        bindir = pg_bin_dir()
        self._run(str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data_dir),
                  "-l", str(self.log_file), "-o", f"-p {self.port}",
                  environment=SERVER_MALLOC_ENVIRONMENT)
        return True

    def stop(self, mode: str = "fast") -> bool:
        if not self.is_initialized() or not self.is_running():
            return False
        bindir = pg_bin_dir()
        self._run(str(bindir / "pg_ctl"), "stop", "-w", "-t", "120", "-m", mode,
                  "-D", str(self.data_dir))
        return True

    def ensure_database(self, dbname: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        name = dbname or self.dbname
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
