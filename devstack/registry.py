"""A local Apicurio Registry (Confluent-compatible API at ``/apis/ccompat/v7``), no Docker.

Its self-contained archive is fetched once from Maven Central (that artifact alone,
``-Dtransitive=false``) and unpacked under the dev stack folder, like the broker jars,
then run with ``java -jar``. Its storage is an H2 database *file*, not the in-memory
default: schemas and their ids survive a restart (records on the topics name those
ids). Layout under ``devstack_dir``::

    apicurio-<version>/            the unpacked archive (runner jar + lib/), shareable
    registry-data/                 the H2 database: every schema, id and setting
    registry-logs/registry.out     its stdout/stderr (previous run: registry.out.1)
    registry.pid                   pid of the running registry
"""

from __future__ import annotations

import fcntl
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.kafka_config import HOST
from devstack.maven import run_maven
from devstack.process import (
    cmdline,
    pid_alive,
    port_in_use,
    read_pid,
    require_tool,
    spawn_detached,
    tail,
    terminate,
)
from devstack.settings import (
    REGISTRY_VERSION,
    DevstackError,
    DevstackSettings,
    get_devstack_settings,
)

ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:2.10"
"""2.x copies the archive alone. 3.x first reads its POM, whose parent
(io.apicurio:apicurio-registry:3.0.9) Maven Central does not serve: "Failed to read
artifact descriptor" (3.1.2, 3.6.1 and 3.8.1 tried)."""
API_PATH = "/apis/ccompat/v7"
RUNNER = "apicurio-registry-app-{version}-runner.jar"
MARKER = ".complete"
_HEAP = "512m"
_STOP_GRACE_S = 30.0
_JAVA_HINT = "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"


def fetch_registry(
    dist: Path, version: str = REGISTRY_VERSION, progress: Callable[[str], None] | None = None
) -> bool:
    """Unpack Apicurio Registry ``version`` into ``dist`` unless already there; True when
    Maven ran. A file lock makes a second caller wait and find it in place."""
    if (dist / MARKER).is_file():
        return False
    dist.parent.mkdir(parents=True, exist_ok=True)
    with (dist.parent / f".{dist.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dist / MARKER).is_file():
            return False
        if progress is not None:
            progress(f"fetching Apicurio Registry {version} with Maven into {dist} (once)")
        shutil.rmtree(dist, ignore_errors=True)
        download = dist.with_name(dist.name + ".download")
        shutil.rmtree(download, ignore_errors=True)
        args = [f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={ARTIFACT.format(version=version)}",
                f"-DoutputDirectory={download}", "-Dtransitive=false"]  # fmt: skip
        run_maven(args, dist.parent, f"Apicurio Registry {version}")
        archives = list(download.glob("*.tar.gz"))
        if not archives:
            raise DevstackError(f"maven ran but {download} holds no Apicurio archive")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(dist, filter="data")
        shutil.rmtree(download, ignore_errors=True)
        if not (dist / RUNNER.format(version=version)).is_file():
            raise DevstackError(f"the Apicurio archive has no {RUNNER.format(version=version)}")
        (dist / MARKER).write_text(version + "\n")
    return True


@dataclass(frozen=True)
class RegistryStatus:
    """What ``orderproc dev status`` says about the registry."""

    running: bool
    ready: bool
    pid: int | None
    url: str

    def describe(self) -> str:
        name = f"registry apicurio {REGISTRY_VERSION}"
        if not self.running:
            return f"{name} stopped url={self.url}"
        state = "running" if self.ready else "running (not answering yet)"
        return f"{name} {state} pid={self.pid} url={self.url}"


class SchemaRegistry:
    """Start, stop and inspect the dev stack's registry.

    Args:
        settings: Defaults to ``get_devstack_settings()``.
        home: Where its data, log and pid file live (default: the dev stack folder).
        dist: Where the unpacked archive lives (default: ``<devstack>/apicurio-<version>``);
            point several registries at one to fetch it once.
        port: Its loopback port (default: ``ORDERPROC_REGISTRY_PORT``, 8081).
    """

    def __init__(
        self,
        settings: DevstackSettings | None = None,
        *,
        home: Path | None = None,
        dist: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.settings = settings or get_devstack_settings()
        devstack = self.settings.devstack_dir
        self.home = home or devstack
        self.dist = dist or devstack / f"apicurio-{REGISTRY_VERSION}"
        self.port = port or self.settings.registry_port
        self.data = self.home / "registry-data"
        self.log = self.home / "registry-logs" / "registry.out"
        self.pid_file = self.home / "registry.pid"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what ``ORDERPROC_SCHEMA_REGISTRY_URL`` is set to."""
        return f"http://{HOST}:{self.port}{API_PATH}"

    @property
    def database_url(self) -> str:
        return f"jdbc:h2:file:{self.data / 'registry'}"

    def status(self) -> RegistryStatus:
        pid = self.running_pid()
        return RegistryStatus(pid is not None, pid is not None and self.answers(2.0), pid, self.url)

    def up(self, progress: Callable[[str], None] | None = None) -> bool:
        """Start the registry (fetching it on first use); True when this call started it.

        Raises:
            DevstackError: Java or Maven missing, the port taken, or it died or did not
                answer within ``registry_start_timeout_s``.
        """
        java = require_tool("java", _JAVA_HINT)
        pid = self.running_pid()
        if pid is not None:
            self._wait_ready(pid, started_here=False)
            return False
        if port_in_use(self.port):
            raise DevstackError(f"port {self.port} is taken; set ORDERPROC_REGISTRY_PORT")
        fetch_registry(self.dist, progress=progress)
        self.data.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.log.exists():
            self.log.replace(self.log.with_name(self.log.name + ".1"))
        cmd = [
            java, f"-Xmx{_HEAP}", "-XX:+ExitOnOutOfMemoryError", "-XX:TieredStopAtLevel=1",
            f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.http.access-log.enabled=false",
            # Look schemas up by canonical form, as Confluent's registry does: a client that
            # sends the same schema laid out differently (confluent-kafka strips the last
            # newline) finds its id.
            "-Dapicurio.ccompat.use-canonical-hash=true",
            f"-Dapicurio.datasource.url={self.database_url}",
            "-jar", str(self.dist / RUNNER.format(version=REGISTRY_VERSION)),
        ]  # fmt: skip
        proc = spawn_detached(cmd, self.log, cwd=self.home)
        self.pid_file.write_text(f"{proc.pid}\n")
        self._wait_ready(proc.pid, started_here=True)
        return True

    def down(self) -> int | None:
        """Stop the registry (SIGTERM, then SIGKILL); the pid stopped, or None."""
        pid = self.running_pid()
        if pid is None:
            return None
        terminate(pid, _STOP_GRACE_S)
        self.pid_file.unlink(missing_ok=True)
        return pid

    def running_pid(self) -> int | None:
        """The pid of this registry if it runs; removes a stale pid file."""
        pid = read_pid(self.pid_file)
        if pid is not None and pid_alive(pid):
            argv = cmdline(pid)
            if argv is None or f"-Dapicurio.datasource.url={self.database_url}" in argv:
                return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def answers(self, timeout_s: float) -> bool:
        """True when the Confluent-compatible API answers a request within ``timeout_s``."""
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=timeout_s) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait_ready(self, pid: int, *, started_here: bool) -> None:
        deadline = time.monotonic() + self.settings.registry_start_timeout_s
        while pid_alive(pid):
            if self.answers(1.0):
                return
            if time.monotonic() >= deadline:
                if started_here:
                    self.down()
                timeout = self.settings.registry_start_timeout_s
                raise DevstackError(
                    self._with_log(f"the registry did not answer within {timeout:g}s")
                )
            time.sleep(0.25)
        self.pid_file.unlink(missing_ok=True)
        raise DevstackError(self._with_log(f"the registry (pid {pid}) exited during startup"))

    def _with_log(self, message: str) -> str:
        lines = [ln for ln in tail(self.log, 40) if not ln.lstrip().startswith(("at ", "..."))]
        if not lines:
            return f"{message} (log: {self.log} is empty)"
        shown = "\n".join(f"  | {ln}" for ln in lines[-8:])
        return f"{message}; last lines of {self.log}:\n{shown}"
