"""A local single-node Apache Kafka broker (KRaft, combined broker+controller).

The broker runs from Maven Central jars with plain ``java -cp``: no Docker, no
download site. Layout under ``devstack_dir``::

    kafka-<version>/libs/     runtime jars (shareable: see ``KafkaBroker(libs_dir=...)``)
    kafka-server.properties   generated on every start from the settings
    kafka-cluster-id          the id the storage was formatted with
    kafka-data/               log dirs and KRaft metadata (kept across restarts)
    kafka-logs/kafka.out      broker stdout/stderr (previous run: kafka.out.1)
    kafka.pid                 pid of the running broker
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from devstack.kafka_config import (
    HOST,
    KafkaPaths,
    check_ports_free,
    new_cluster_id,
    render_server_properties,
)
from devstack.maven import fetch_kafka_jars, kafka_home
from devstack.process import (
    cmdline,
    kill_now,
    pid_alive,
    read_pid,
    require_tool,
    spawn_detached,
    tail,
    terminate,
)
from devstack.settings import (
    KAFKA_VERSION,
    DevstackError,
    DevstackSettings,
    get_devstack_settings,
)
from orderproc.kafka.clients import Admin

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
_JAVA_HINT = "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
_HEAP = "512M"
_STOP_GRACE_S = 30.0
_FORMAT_TIMEOUT_S = 120.0
_LOG_TAIL_LINES = 10


@dataclass(frozen=True)
class KafkaStatus:
    """What ``orderproc dev status`` reports about the broker."""

    running: bool
    ready: bool
    pid: int | None
    bootstrap: str
    version: str = KAFKA_VERSION
    security: str = "PLAINTEXT"

    def describe(self) -> str:
        """One friendly line, e.g. ``kafka 4.1.1 running pid=123 bootstrap=127.0.0.1:9092``.

        A secured broker adds its listener's protocol: ``... security=SASL_SSL``.
        """
        suffix = "" if self.security == "PLAINTEXT" else f" security={self.security}"
        if not self.running:
            return f"kafka {self.version} stopped bootstrap={self.bootstrap}{suffix}"
        state = "running" if self.ready else "running (not answering yet)"
        return f"kafka {self.version} {state} pid={self.pid} bootstrap={self.bootstrap}{suffix}"


@dataclass(frozen=True)
class KafkaUpResult:
    """Outcome of ``KafkaBroker.up``: whether this call started the broker."""

    started: bool
    status: KafkaStatus


def metadata_answers(bootstrap: str, timeout_s: float) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout_s``."""
    with _admin(bootstrap) as admin:
        return _answers(admin, timeout_s)


def _admin(bootstrap: str, client_config: dict[str, Any] | None = None) -> Admin:
    return Admin(
        {
            **(client_config or {}),
            "bootstrap.servers": bootstrap,
            # "Connection refused" while the broker boots is expected, not news.
            "log_level": 0,
            # librdkafka backs off up to 10 s by default; we want to notice readiness fast.
            "reconnect.backoff.max.ms": 500,
        }
    )


def _answers(admin: Admin, timeout_s: float) -> bool:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


class KafkaBroker:
    """Start, stop and inspect the devstack broker described by ``settings``.

    Subclasses (the secured broker, ``devstack.kafka_secure``) keep their
    files in ``folder`` under the devstack folder and change the hooks below the
    ``_server_overrides`` line: configuration, storage format arguments, the
    client configuration of the readiness probe.

    Args:
        settings: Defaults to ``get_devstack_settings()``.
        libs_dir: Where the jars live; defaults to ``<devstack_dir>/kafka-<version>/libs``.
            Point several devstacks at one folder to fetch the jars once.
    """

    folder: str | None = None
    """Subfolder of the devstack folder holding this broker's files (None: the folder itself)."""
    jvm_options: tuple[str, ...] = ()
    """Extra options of the broker's JVM."""
    security = "PLAINTEXT"

    def __init__(
        self,
        settings: DevstackSettings | None = None,
        *,
        libs_dir: Path | None = None,
        ports: tuple[int, int] | None = None,
    ) -> None:
        self.settings = settings or get_devstack_settings()
        devstack = self.settings.devstack_dir
        home = devstack / self.folder if self.folder else devstack
        self.paths = KafkaPaths(home, libs_dir or kafka_home(devstack) / "libs")
        self.port, self.controller_port = ports or (
            self.settings.kafka_port,
            self.settings.kafka_controller_port,
        )

    @property
    def bootstrap(self) -> str:
        """The broker's own listener, ``127.0.0.1:<port>`` (``kafka_port`` unless given)."""
        return f"{HOST}:{self.port}"

    def status(self) -> KafkaStatus:
        """Whether the broker runs and answers; cleans up a stale pid file."""
        pid = self.running_pid()
        ready = False
        if pid is not None:
            with self._probe_admin() as admin:
                ready = _answers(admin, 2.0)
        return KafkaStatus(
            running=pid is not None,
            ready=ready,
            pid=pid,
            bootstrap=self.bootstrap,
            security=self.security,
        )

    def up(self, progress: Callable[[str], None] | None = None) -> KafkaUpResult:
        """Start the broker (fetching jars and formatting storage on first use).

        Harmless when it already runs: waits until it answers and reports it.

        Args:
            progress: Told, in words, about slow first-run steps (the Maven fetch).

        Raises:
            DevstackError: a tool is missing, a port is taken, Maven failed, or the
                broker died or did not answer within ``kafka_start_timeout_s``.
        """
        started = self.start(progress)
        self.wait_ready(started)
        return KafkaUpResult(started=started is not None, status=self.status())

    def start(self, progress: Callable[[str], None] | None = None) -> int | None:
        """Spawn the broker without waiting for it (the jars, config and storage first).

        Returns:
            Its new pid, or None when it already runs.
        """
        java = require_tool("java", _JAVA_HINT)
        if self.running_pid() is not None:
            return None
        check_ports_free(self.port, self.controller_port)
        fetch_kafka_jars(self.paths.libs, progress=progress)
        self._write_config()
        self._format_storage(java)
        return self._spawn(java)

    def wait_ready(self, spawned: int | None = None) -> None:
        """Wait (``kafka_start_timeout_s`` at most) until the broker answers: the one
        ``start`` just ``spawned`` (stopped again if it does not answer), else the running one.

        Raises:
            DevstackError: it is not running, died, or did not answer in time.
        """
        # The pid just spawned is ours: its /proc entry may still be mid-exec (an empty
        # command line), so it is not checked the way a pid file found on disk is.
        pid = spawned if spawned is not None else self.running_pid()
        if pid is None:
            raise DevstackError(self._with_log(f"kafka on {self.bootstrap} is not running"))
        deadline = time.monotonic() + self.settings.kafka_start_timeout_s
        self._wait_ready(pid, deadline, started_here=spawned is not None)

    def kill(self) -> int | None:
        """SIGKILL the broker (a crash, for drills): no controlled shutdown, data kept.

        Returns:
            The pid that was killed, or None when nothing was running.
        """
        pid = self.running_pid()
        if pid is None:
            return None
        kill_now(pid)
        self.paths.pid_file.unlink(missing_ok=True)
        return pid

    def down(self) -> int | None:
        """Stop the broker (SIGTERM, then SIGKILL after a grace period).

        Returns:
            The pid that was stopped, or None when nothing was running.
        """
        pid = self.running_pid()
        if pid is None:
            return None
        terminate(pid, _STOP_GRACE_S)
        self.paths.pid_file.unlink(missing_ok=True)
        return pid

    def running_pid(self) -> int | None:
        """The pid of this devstack's live broker; removes a stale pid file."""
        pid_file = self.paths.pid_file
        pid = read_pid(pid_file)
        if pid is not None and pid_alive(pid) and self._is_our_broker(pid):
            return pid
        pid_file.unlink(missing_ok=True)
        return None

    def _is_our_broker(self, pid: int) -> bool:
        # A pid file can outlive its process and the pid be reused: never signal a
        # process unless it is a broker started with this devstack's config.
        argv = cmdline(pid)
        if not argv:
            return True  # no /proc to ask (or mid-exec); kill(pid, 0) already said it exists
        return "kafka.Kafka" in argv and str(self.paths.properties) in argv

    def _classpath(self) -> str:
        return f"{self.paths.libs}/*"  # java expands the wildcard itself

    def _write_config(self) -> None:
        self.paths.data.mkdir(parents=True, exist_ok=True)
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self._write_properties(
            render_server_properties(
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.paths.data,
                overrides=self._server_overrides(),
            )
        )

    # -- what a secured broker changes ---------------------------------------------

    def _server_overrides(self) -> dict[str, str]:
        """server.properties keys laid over the plain broker's."""
        return {}

    def _write_properties(self, text: str) -> None:
        self.paths.properties.write_text(text)

    def _format_args(self) -> list[str]:
        """Extra ``StorageTool format`` arguments (SCRAM users that must exist at once)."""
        return []

    def _probe_config(self) -> dict[str, Any]:
        """Client keys the readiness probe needs besides ``bootstrap.servers``."""
        return {}

    def _probe_admin(self) -> Admin:
        return _admin(self.bootstrap, self._probe_config())

    def _cluster_id(self) -> str:
        path = self.paths.cluster_id_file
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        cluster_id = new_cluster_id()
        path.write_text(cluster_id + "\n")
        return cluster_id

    def _format_storage(self, java: str) -> None:
        if (self.paths.data / "meta.properties").is_file():
            return  # formatted on an earlier start; formatting again would fail
        cmd = [
            java,
            "-Xmx256M",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={self._cluster_id()}",  # one token: an id may begin with '-'
            "-c",
            str(self.paths.properties),
            "--ignore-formatted",
            *self._format_args(),
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_FORMAT_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            lines = (result.stdout + "\n" + result.stderr).strip().splitlines() or ["no output"]
            raise DevstackError(f"kafka storage format failed: {lines[-1].strip()}")

    def _spawn(self, java: str) -> int:
        log = self.paths.console_log
        if log.exists():
            log.replace(log.with_name(log.name + ".1"))
        cmd = [
            java,
            f"-Xms{_HEAP}",
            f"-Xmx{_HEAP}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            *self.jvm_options,
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.paths.logs}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.paths.properties),
        ]
        proc = spawn_detached(cmd, log, cwd=self.paths.devstack_dir)
        self.paths.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, pid: int, deadline: float, *, started_here: bool) -> None:
        with self._probe_admin() as admin:
            while pid_alive(pid):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if started_here:
                        terminate(pid, _STOP_GRACE_S)
                        self.paths.pid_file.unlink(missing_ok=True)
                    timeout = self.settings.kafka_start_timeout_s
                    raise DevstackError(
                        self._with_log(
                            f"kafka did not answer on {self.bootstrap} within {timeout:g}s"
                        )
                    )
                if _answers(admin, min(1.0, remaining)):
                    return
        self.paths.pid_file.unlink(missing_ok=True)
        raise DevstackError(self._with_log(f"kafka (pid {pid}) exited during startup"))

    def _with_log(self, message: str) -> str:
        log = self.paths.console_log
        # Java stack frames crowd out the lines that say what went wrong.
        lines = [ln for ln in tail(log, 60) if not ln.lstrip().startswith(("at ", "..."))]
        lines = lines[-_LOG_TAIL_LINES:]
        if not lines:
            return f"{message} (log: {log} is empty)"
        return f"{message}; last lines of {log}:\n" + "\n".join(f"  | {ln}" for ln in lines)
