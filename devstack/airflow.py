"""A local Airflow 3 on loopback for the project's DAGs.

``make airflow`` runs ``python -m devstack.airflow [--port 8080]``. It
runs in the foreground until Ctrl-C (or SIGTERM), which stops every Airflow
process it started (Ctrl-C again: at once).

It starts what ``airflow standalone`` starts (API server, scheduler, DAG
processor, triggerer) but each part itself, in one process group, because
standalone always opens the scheduler's and triggerer's log servers on every
interface (ports 8793/8794, no host setting): here they are skipped
(``--skip-serve-logs``; the API server reads task logs from the local files), so
only the API server listens, on 127.0.0.1. Parallelism is sized to the machine
(LocalExecutor forks that many workers up front: 32 by default).

Layout under ``<devstack_dir>/airflow`` (``AIRFLOW_HOME``)::

    airflow.cfg, airflow.db                            Airflow's own config and metadata DB
    simple_auth_manager_passwords.json.generated       the admin password (kept across starts)
    airflow.log                                        all Airflow output (previous: .log.1)

The ``kafka_default`` and ``orderproc_db`` connections come from the orderproc
settings as ``AIRFLOW_CONN_*`` environment variables, so they never sit in the
metadata DB and always match what the workers use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from sqlalchemy.engine import make_url

from devstack.process import port_in_use, tail
from devstack.settings import (
    CHECKOUT,
    DevstackError,
    DevstackSettings,
    get_devstack_settings,
    with_dev_defaults,
)
from orderproc.config import Settings, get_settings
from orderproc.errors import OrderProcError
from orderproc.store.engine import redacted

HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ADMIN = "admin"
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 30.0
KAFKA_CONSUMER_DEFAULTS = {
    "group.id": "orderproc-airflow",
    # Offsets are committed by the drain after the database commit, never automatically.
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}


@dataclass(frozen=True)
class AirflowPaths:
    """Where the local Airflow keeps its files."""

    home: Path

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    @property
    def log(self) -> Path:
        return self.home / "airflow.log"

    @property
    def metadata_db(self) -> Path:
        return self.home / "airflow.db"


def kafka_connection(settings: Settings) -> str:
    """``AIRFLOW_CONN_KAFKA_DEFAULT``: the settings' librdkafka config as a ``kafka`` connection."""
    conf = settings.kafka_config(**KAFKA_CONSUMER_DEFAULTS)
    # A connection's extra is JSON: Python objects in the client config (a logger) stay out.
    extra = {k: v for k, v in conf.items() if isinstance(v, str | int | float | bool)}
    return json.dumps({"conn_type": "kafka", "extra": extra})


def database_connection(database_url: str) -> str:
    """``AIRFLOW_CONN_ORDERPROC_DB`` for a store URL (PostgreSQL or SQLite), as JSON."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": url.database})
    if url.get_backend_name() != "postgresql":
        raise DevstackError(f"unsupported store database {url.get_backend_name()!r}")
    conn = {
        "conn_type": "postgres",
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,  # Airflow's name for the database
        "extra": {k: str(v) for k, v in url.query.items()},
    }
    return json.dumps({k: v for k, v in conn.items() if v not in (None, {})})


def airflow_env(
    settings: Settings,
    paths: AirflowPaths,
    port: int,
    base: Mapping[str, str],
    users: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the local Airflow: ``base`` plus the local stack's config.

    ``users`` maps user names to SimpleAuthManager roles (viewer, user, op, admin);
    default: one ``admin``.
    """
    roles = users or {ADMIN: "admin"}
    venv_bin = str(Path(sys.executable).parent)  # the parts start their own `airflow ...`
    return {
        **base,
        "PATH": os.pathsep.join([venv_bin, base.get("PATH", "")]),
        "AIRFLOW_HOME": str(paths.home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{paths.metadata_db}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(CHECKOUT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(CHECKOUT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism()),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        # Tasks report to the API server; on a port other than 8080 they would stay queued.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in roles.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(paths.passwords_file),
        "AIRFLOW_CONN_KAFKA_DEFAULT": kafka_connection(settings),
        "AIRFLOW_CONN_ORDERPROC_DB": database_connection(settings.effective_database_url),
        # The tasks' own settings: reports go where `make demo` and `orderproc report` put them.
        "ORDERPROC_DATA_DIR": str(settings.data_dir),
    }


def parallelism() -> int:
    """Task slots for the local Airflow: one per core, at least two."""
    return max(2, os.cpu_count() or 2)


PARTS = """
"$AIRFLOW" db migrate || exit 1
"$AIRFLOW" api-server &
"$AIRFLOW" scheduler --skip-serve-logs &
"$AIRFLOW" dag-processor &
"$AIRFLOW" triggerer --skip-serve-logs &
wait -n  # one part ending ends the local Airflow; stop() takes the rest of the group
"""
"""The shell that starts Airflow's parts; the devstack signals its process group."""


def health_url(port: int) -> str:
    return f"http://{HOST}:{port}/api/v2/monitor/health"


def answers(port: int, timeout_s: float = 2.0) -> bool:
    """True when the API server at ``port`` answers its health endpoint with 200."""
    try:
        with urllib.request.urlopen(health_url(port), timeout=timeout_s) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class LocalAirflow:
    """The local Airflow's parts in their own process group, stopped as one."""

    def __init__(
        self,
        settings: Settings,
        port: int = DEFAULT_PORT,
        dev: DevstackSettings | None = None,
        *,
        users: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``users`` (name -> role) and the base environment ``env`` (default: this
        process's) are for tests; their passwords are in ``paths.passwords_file``,
        which may be written before ``start`` to fix them."""
        self.settings = settings
        self.dev = dev or get_devstack_settings()
        self.port = port
        self.users = dict(users or {ADMIN: "admin"})
        self.base_env = dict(os.environ if env is None else env)
        self.paths = AirflowPaths(self.dev.devstack_dir / "airflow")
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def prepare(self) -> list[str]:
        """Check the port, migrate the store; returns warnings for the user."""
        if port_in_use(self.port, HOST):
            raise DevstackError(f"port {HOST}:{self.port} is in use; pick another with --port")
        self.paths.home.mkdir(parents=True, exist_ok=True)
        _migrate_store(self.settings.effective_database_url)
        from devstack.kafka import metadata_answers

        if metadata_answers(self.settings.bootstrap_servers, 3.0):
            return []
        return [
            f"kafka does not answer at {self.settings.bootstrap_servers}: start it with "
            "`orderproc dev up`; until then the drain and replay DAGs fail"
        ]

    def start(self) -> int:
        """Spawn Airflow's parts (output to the log file); returns the group leader's pid."""
        log = self.paths.log
        if log.exists():
            log.replace(log.with_name(log.name + ".1"))
        env = airflow_env(self.settings, self.paths, self.port, self.base_env, self.users)
        env["AIRFLOW"] = str(Path(sys.executable).with_name("airflow"))
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", PARTS],
                cwd=self.paths.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own group: Ctrl-C reaches it only through stop(), which signals
                # every Airflow process at once (scheduler, API server, task runners).
                start_new_session=True,
            )
        return self.proc.pid

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the health endpoint answers (or a stop was requested).

        Raises:
            DevstackError: Airflow exited, or did not answer within ``timeout_s``.
        """
        proc = self._running()
        deadline = time.monotonic() + timeout_s
        while not self.stopping and not answers(self.port):
            if proc.poll() is not None:
                raise DevstackError(self._with_log(f"airflow exited with code {proc.returncode}"))
            if time.monotonic() >= deadline:
                raise DevstackError(self._with_log(f"airflow did not answer within {timeout_s:g}s"))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)  # a bounded pause that ends early if Airflow dies

    def wait(self) -> int | None:
        """Block until Airflow exits (its exit code) or a stop is requested (None)."""
        proc = self._running()
        while not self.stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(timeout=1.0)
        return None

    def request_stop(self) -> None:
        """Ask Airflow to stop (a second request kills it); never blocks: signal-handler safe."""
        if self.proc is None or self.proc.poll() is not None:
            self.stopping = True
            return
        if self.stopping:
            _signal_group(self.proc.pid, signal.SIGKILL)
            return
        self.stopping = True
        # Every part shuts down cleanly on SIGTERM (the scheduler stops its task runners).
        _signal_group(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Stop every part of the process group; waits for all of it, then kills leftovers."""
        self.request_stop()
        if self.proc is None:
            return
        if _group_gone(self.proc, STOP_GRACE_S):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _signal_group(self.proc.pid, sig) or _group_gone(self.proc, 10.0):
                return

    def banner(self) -> str:
        """What the user needs: URL, login, password file, folders and log."""
        return "\n".join(
            [
                f"airflow running (pid {self._running().pid}): http://{HOST}:{self.port}",
                f"  login: {ADMIN}; password in {self.paths.passwords_file}",
                f"  dags: {CHECKOUT / 'dags'}   plugins: {CHECKOUT / 'plugins'}",
                f"  connections: kafka_default -> {self.settings.bootstrap_servers}, "
                f"orderproc_db -> {redacted(self.settings.effective_database_url)}",
                f"  log: {self.paths.log}",
                "Ctrl-C stops Airflow.",
            ]
        )

    def _running(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise DevstackError("airflow was not started")
        return self.proc

    def _with_log(self, message: str) -> str:
        lines = tail(self.paths.log, 10)
        return f"{message}; last lines of {self.paths.log}:\n" + "\n".join(
            f"  | {line}" for line in lines
        )


def _migrate_store(database_url: str) -> None:
    from orderproc.store.engine import open_engine
    from orderproc.store.migrate import upgrade

    try:
        with open_engine(database_url) as engine:
            upgrade(engine)
    except Exception as exc:  # alembic and the drivers raise many types; one line for the user
        raise DevstackError(f"could not migrate the store: {str(exc).splitlines()[0]}") from exc


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_gone(leader: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Poll up to ``timeout_s`` until no process of the leader's group is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        leader.poll()  # reap the leader: a zombie still counts as a group member
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def run(settings: Settings, port: int) -> int:
    """Start Airflow, print where it is, wait until it exits or is stopped."""
    local = LocalAirflow(settings, port)
    for warning in local.prepare():
        print(f"warning: {warning}", file=sys.stderr)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        local.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting airflow (log: {local.paths.log}) ...", flush=True)
    local.start()
    try:
        local.wait_ready()
        if not local.stopping:
            print(local.banner(), flush=True)
        code = local.wait()
    finally:
        local.stop()
    if code is None or local.stopping:
        print("airflow stopped", flush=True)
        return 0
    print(f"airflow exited with code {code}; see {local.paths.log}", file=sys.stderr)
    return code or 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devstack.airflow [--port N]``."""
    parser = argparse.ArgumentParser(prog="python -m devstack.airflow")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="API server port")
    args = parser.parse_args(argv)
    try:
        return run(with_dev_defaults(get_settings()), args.port)
    except OrderProcError as exc:
        print(f"airflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
