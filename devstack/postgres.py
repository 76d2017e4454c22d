"""A local PostgreSQL cluster from Debian packages, for the devstack and CI.

Uses postgresql-common's cluster tools (``pg_createcluster``, ``pg_ctlcluster``,
``pg_lsclusters``), so it works without systemd. Installing, starting and stopping
need root; ``status`` does not. Shell use (CI)::

    python -m devstack.postgres up      # prints the SQLAlchemy URL
    python -m devstack.postgres status
    python -m devstack.postgres down
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.settings import DevstackError
from orderproc.store.engine import redacted

HOST = "127.0.0.1"
DEFAULT_PORT = 5432
CLUSTER = "main"
ROLE = "orderproc"
PASSWORD = "orderproc"  # a local development credential, not a secret
DATABASE = "orderproc"
PG_LIB = Path("/usr/lib/postgresql")
ETC = Path("/etc/postgresql")
DROPIN_NAME = "50-orderproc.conf"
_INSTALL_HINT = "install PostgreSQL as root: apt-get install -y postgresql"


@dataclass(frozen=True)
class PostgresStatus:
    """What ``orderproc dev status`` reports about PostgreSQL."""

    version: str | None
    running: bool
    port: int
    url: str

    def describe(self) -> str:
        """One friendly line, e.g. ``postgres 15 running port=5432 url=...``."""
        if self.version is None:
            return "postgres not installed"
        state = "running" if self.running else "stopped"
        return f"postgres {self.version} {state} port={self.port} url={redacted(self.url)}"


def database_url(port: int = DEFAULT_PORT) -> str:
    """The SQLAlchemy URL of the devstack database."""
    return f"postgresql+psycopg://{ROLE}:{PASSWORD}@{HOST}:{port}/{DATABASE}"


def installed_version() -> str | None:
    """Newest PostgreSQL major version with server binaries and cluster tools, if any."""
    if shutil.which("pg_ctlcluster") is None or not PG_LIB.is_dir():
        return None
    majors = [p.name for p in PG_LIB.iterdir() if (p / "bin" / "postgres").is_file()]
    numeric = sorted((m for m in majors if m.isdigit()), key=int)
    return numeric[-1] if numeric else None


def postgres_up(port: int = DEFAULT_PORT, timeout_s: float = 60.0) -> str:
    """Install (if needed) and start PostgreSQL; ensure the orderproc role and database.

    Returns:
        The SQLAlchemy URL, ``postgresql+psycopg://orderproc:orderproc@127.0.0.1:5432/orderproc``.

    Raises:
        DevstackError: not root, installing failed, or the server did not come up.
    """
    version = _ensure_installed()
    _require_root("start PostgreSQL")
    if _cluster_state(version) is None:
        _run(["pg_createcluster", "-p", str(port), version, CLUSTER], "pg_createcluster")
    changed = _configure(version, port)
    state = _cluster_state(version)
    if state is not None and state.startswith("online"):
        if changed:
            _run(["pg_ctlcluster", version, CLUSTER, "restart"], "pg_ctlcluster restart")
    else:
        _run(["pg_ctlcluster", version, CLUSTER, "start"], "pg_ctlcluster start")
    _wait_accepting(version, port, time.monotonic() + timeout_s)
    _ensure_role_and_database(version, port)
    _check_login(port)
    return database_url(port)


def postgres_down() -> bool:
    """Stop the devstack cluster; True when it was running."""
    version = installed_version()
    if version is None:
        return False
    state = _cluster_state(version)
    if state is None or not state.startswith("online"):
        return False
    _require_root("stop PostgreSQL")
    _run(["pg_ctlcluster", version, CLUSTER, "stop"], "pg_ctlcluster stop")
    return True


def postgres_status() -> PostgresStatus:
    """Installed version, running state and URL; never installs anything."""
    version = installed_version()
    port = DEFAULT_PORT
    running = False
    if version is not None:
        port = _cluster_port(version) or DEFAULT_PORT
        state = _cluster_state(version)
        running = state is not None and state.startswith("online")
    return PostgresStatus(version=version, running=running, port=port, url=database_url(port))


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise DevstackError(f"must run as root to {action} (pg_ctlcluster, runuser); or sudo it")


def _run(cmd: Sequence[str], what: str, timeout_s: float = 120.0) -> str:
    # Output is captured so `python -m ... up` prints nothing but the URL on stdout.
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd="/",  # runuser -u postgres cannot read every caller's working directory
        )
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(f"{what} did not finish within {timeout_s:g}s") from exc
    except FileNotFoundError as exc:
        raise DevstackError(f"{what}: `{cmd[0]}` not found; {_INSTALL_HINT}") from exc
    if result.returncode != 0:
        raise DevstackError(f"{what} failed: {_telling_line(result.stdout + result.stderr)}")
    return result.stdout


def _telling_line(output: str) -> str:
    # pg_ctl ends with "Examine the log output." and apt with generic lines; the
    # server's FATAL line or apt's "E:" line says what is actually wrong.
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(mark in line for mark in ("FATAL:", "ERROR:", "PANIC:")) or line.startswith("E:"):
            return line
    return lines[-1] if lines else "no output"


def _ensure_installed() -> str:
    version = installed_version()
    if version is not None:
        return version
    if os.geteuid() != 0:  # installing is root's job; say exactly what to install
        raise DevstackError(f"PostgreSQL is not installed; {_INSTALL_HINT}")
    if shutil.which("apt-get") is None:
        raise DevstackError(f"PostgreSQL is not installed and apt-get is missing; {_INSTALL_HINT}")
    # `env` sets the frontend for apt alone; debconf must not wait for a prompt.
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    _run([*apt, "update"], "apt-get update", timeout_s=600.0)
    _run([*apt, "install", "-y", "postgresql"], "apt-get install postgresql", timeout_s=900.0)
    version = installed_version()
    if version is None:
        raise DevstackError(f"apt-get installed postgresql but no server found under {PG_LIB}")
    return version


def _cluster_fields(version: str) -> list[str] | None:
    # pg_lsclusters -h: "Ver Cluster Port Status Owner Data-directory Log-file", no header.
    out = _run(["pg_lsclusters", "-h"], "pg_lsclusters")
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == version and fields[1] == CLUSTER:
            return fields
    return None


def _cluster_state(version: str) -> str | None:
    fields = _cluster_fields(version)
    return fields[3] if fields else None


def _cluster_port(version: str) -> int | None:
    fields = _cluster_fields(version)
    return int(fields[2]) if fields and fields[2].isdigit() else None


def _configure(version: str, port: int) -> bool:
    """Loopback only, on ``port``; True when the config changed (a restart is due).

    A drop-in under ``conf.d`` (which Debian's postgresql.conf includes last) rather
    than ``pg_conftool set``: pg_conftool takes ``127.0.0.1`` for a number and writes
    it unquoted, which the server then refuses to parse.
    """
    dropin = ETC / version / CLUSTER / "conf.d" / DROPIN_NAME
    wanted = (
        "# Written by devstack.postgres; rewritten on every `up`.\n"
        f"listen_addresses = '{HOST}'\n"
        f"port = {port}\n"
    )
    if dropin.is_file() and dropin.read_text() == wanted:
        return False
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(wanted)
    shutil.chown(dropin, user="postgres", group="postgres")
    return True


def _wait_accepting(version: str, port: int, deadline: float) -> None:
    pg_isready = str(PG_LIB / version / "bin" / "pg_isready")
    while True:
        probe = subprocess.run(
            [pg_isready, "-q", "-h", HOST, "-p", str(port)], check=False, timeout=10
        )
        if probe.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise DevstackError(f"PostgreSQL did not accept connections on {HOST}:{port} in time")
        time.sleep(0.2)


def _psql(version: str, port: int, sql: str) -> str:
    psql = str(PG_LIB / version / "bin" / "psql")
    cmd = ["runuser", "-u", "postgres", "--", psql, "-p", str(port), "-d", "postgres"]
    return _run([*cmd, "-v", "ON_ERROR_STOP=1", "-tAc", sql], "psql").strip()


def _ensure_role_and_database(version: str, port: int) -> None:
    if not _psql(version, port, f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
        _psql(version, port, f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
    if not _psql(version, port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
        _psql(version, port, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def _check_login(port: int) -> None:
    # Proves what callers rely on: password login over TCP, not just a live server.
    conninfo = f"postgresql://{ROLE}:{PASSWORD}@{HOST}:{port}/{DATABASE}"
    try:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DevstackError(f"PostgreSQL is up but {ROLE} cannot log in: {first}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devstack.postgres up|down|status``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["up"], ["down"], ["status"]):
        print("usage: python -m devstack.postgres up|down|status", file=sys.stderr)
        return 2
    try:
        if args == ["up"]:
            print(postgres_up())
        elif args == ["down"]:
            print("postgres stopped" if postgres_down() else "postgres was not running")
        else:
            print(postgres_status().describe())
    except DevstackError as exc:
        print(f"orderproc: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
