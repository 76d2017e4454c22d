"""The fault-injection suite's fixtures: real processes, dedicated servers to break, and the
reconciliation every scenario ends with.

Each scenario runs ``python -m orderproc produce|consume`` (and the drain) as real
processes, injects one fault, lets the system recover by itself and then reconciles:
every order id written to the orders topic (the ground truth, read back from the
topic rather than taken from the producer's word) must be in ``processed_orders`` or
named by a dead letter in the DLQ topic, read to its end. Each scenario prints

    scenario=<name> produced=N processed=N dead_lettered=N lost=N duplicated=N

(``duplicated``: DLQ records beyond one per dead-lettered order, plus processed rows
beyond one per id) and the lines are repeated in pytest's terminal summary.

Faults that stop a server never touch the shared test broker or PostgreSQL (other
people's tests use them): ``dedicated_broker`` and ``dedicated_postgres`` start
servers of their own on free loopback ports and always stop them by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from sqlalchemy import text

from orderproc.config import Settings
from orderproc.kafka.clients import Admin
from orderproc.serde import serde_for
from orderproc.store.engine import open_engine
from tests.support import free_ports, read_committed

SCALE = int(os.environ.get("ORDERPROC_TEST_SCALE", "1"))

_LINES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LINES] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A scenario's hang guard grows with ``ORDERPROC_TEST_SCALE`` (pyproject's 300 s does not)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900 * SCALE))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Every scenario's reconciliation line, whatever ``-r``/``-s`` say."""
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section("fault scenarios: reconciliation")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def scale() -> int:
    """``ORDERPROC_TEST_SCALE`` (default 1): how heavy the scenarios are."""
    return SCALE


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds; fail the test after ``timeout_s`` (a bound, not a spec)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def wait_until() -> Callable[[Callable[[], bool], float, str], None]:
    """``wait_until(check, timeout_s, what)``: a bounded wait on an observable condition."""
    return wait_for


# -- processes -------------------------------------------------------------------------


class Proc:
    """One ``python -m orderproc ...`` process; its stdout and stderr go to ``log``."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> int:
        """SIGKILL and reap; returns the exit status (-9)."""
        self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(30)

    def sigterm(self, timeout_s: float = 120.0) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit status."""
        self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGUSR1)  # a worker writes where each thread is
            time.sleep(1.0)
            pytest.fail(
                f"{self.name} (pid {self.pid}) still running after {timeout_s:.0f}s:\n"
                f"{self.tail(80)}"
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def last_line(self) -> str:
        lines = self.output().strip().splitlines()
        return lines[-1] if lines else ""


class Procs:
    """Starts orderproc processes with a test's settings; the finalizer kills what still runs."""

    def __init__(self, folder: Path, env_of: Callable[[Settings], dict[str, str]]) -> None:
        self.folder = folder
        self.env_of = env_of
        self.started: list[Proc] = []

    def start(self, name: str, settings: Settings, *args: str, module: str = "orderproc") -> Proc:
        log = self.folder / f"{len(self.started):02d}-{name}.log"
        env = self.env_of(settings)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def produce(self, settings: Settings, count: int, rate: float, fail_share: float) -> Proc:
        """``orderproc produce --fail-share F --count N --rate R --quiet``."""
        return self.start(
            "producer",
            settings,
            "produce",
            "--quiet",
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--fail-share",
            str(fail_share),
        )

    def consume(self, settings: Settings, *args: str) -> Proc:
        """``orderproc consume --quiet <args>``."""
        return self.start("consumer", settings, "consume", "--quiet", *args)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.running:
                proc.popen.kill()  # by its own pid, never by name
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(30)


@pytest.fixture
def procs(tmp_path: Path, settings_env: Callable[[Settings], dict[str, str]]) -> Iterator[Procs]:
    """``procs.produce(...)``, ``procs.consume(...)``, ``procs.start(...)``: real processes."""
    folder = tmp_path / "procs"
    folder.mkdir()
    manager = Procs(folder, settings_env)
    yield manager
    manager.stop_all()


def producer_summary(proc: Proc) -> dict[str, int]:
    """``produced=N delivered=N failed=N``, the producer's last line, as numbers."""
    for line in reversed(proc.output().splitlines()):
        if line.startswith("produced="):
            return {k: int(v) for k, v in (part.split("=", 1) for part in line.split())}
    pytest.fail(f"the producer printed no summary:\n{proc.tail()}")


@pytest.fixture
def produced_summary() -> Callable[[Proc], dict[str, int]]:
    """``produced_summary(proc)``: the producer's ``produced/delivered/failed`` counts."""
    return producer_summary


# -- reading topics and the store ---------------------------------------------------------


read_topic = read_committed  # on any broker: the scenarios' own ones too


def end_offsets(bootstrap: str, topic: str) -> int:
    """The sum of ``topic``'s high watermarks: how many records it ever got. Asked again
    (a few times) while a cluster's leaders move: a stale leader answers "not leader"."""
    for attempt in range(10):
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "faults-peek", "log_level": 3}
        )
        try:
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            return sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in partitions
            )
        except KafkaException:
            if attempt == 9:
                raise
            time.sleep(1.0)
        finally:
            consumer.close()
    raise AssertionError("unreachable")


@pytest.fixture
def set_topic_config() -> Callable[[Settings, str, str, str | None], None]:
    """``set_topic_config(settings, topic, name, value)``: change one topic config on the
    settings' broker; ``None`` deletes it (back to the broker's default)."""

    def alter(settings: Settings, topic: str, name: str, value: str | None) -> None:
        op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
        entry = ConfigEntry(name, value or "", incremental_operation=op)
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
        with Admin({"bootstrap.servers": settings.bootstrap_servers}) as admin:
            for future in admin.incremental_alter_configs([resource]).values():
                future.result(timeout=30)

    return alter


@pytest.fixture
def topic_records() -> Callable[[Settings, str], list[Message]]:
    """``topic_records(settings, topic)``: every record of a topic on the settings' broker."""
    return lambda settings, topic: read_topic(settings.bootstrap_servers, topic)


def orders_in_topic(settings: Settings) -> dict[str, float]:
    """Order id -> price of every order in the orders topic (the ground truth), in the
    settings' wire format."""
    serde = serde_for(settings)
    orders = {}
    for msg in read_topic(settings.bootstrap_servers, settings.orders_topic):
        order = serde.decode(msg.value())
        orders[order.order_id] = order.price
    return orders


@pytest.fixture
def produced_orders() -> Callable[[Settings], dict[str, float]]:
    """``produced_orders(settings)``: order id -> price, read back from the orders topic."""
    return orders_in_topic


def dlq_envelopes(settings: Settings) -> list[dict[str, Any]]:
    return [
        json.loads(m.value()) for m in read_topic(settings.bootstrap_servers, settings.dlq_topic)
    ]


def processed_counts(database_url: str) -> tuple[set[str], int]:
    """The processed order ids, and how many rows hold them."""
    with open_engine(database_url) as engine, engine.connect() as conn:
        ids = set(conn.scalars(text("SELECT order_id FROM processed_orders")))
        rows = int(conn.scalar(text("SELECT count(*) FROM processed_orders")) or 0)
    return ids, rows


def processed_count(database_url: str) -> int:
    with open_engine(database_url) as engine, engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM processed_orders")) or 0)


@pytest.fixture
def stored_ids() -> Callable[[Settings], set[str]]:
    """``stored_ids(settings)``: the order ids in the settings' ``processed_orders``."""
    return lambda settings: processed_counts(settings.effective_database_url)[0]


@pytest.fixture
def count_processed() -> Callable[[Settings], int]:
    """``count_processed(settings)``: rows in the settings' ``processed_orders`` now."""
    return lambda settings: processed_count(settings.effective_database_url)


# -- reconciliation ---------------------------------------------------------------------


@dataclass
class Reconciliation:
    """Where every produced order ended up."""

    scenario: str
    produced: dict[str, float]
    processed_ids: set[str]
    dead_counts: Counter[str]
    processed_rows: int

    @property
    def processed(self) -> set[str]:
        return self.processed_ids & self.produced.keys()

    @property
    def dead_lettered(self) -> set[str]:
        return set(self.dead_counts) & self.produced.keys()

    @property
    def lost(self) -> set[str]:
        return self.produced.keys() - self.processed_ids - set(self.dead_counts)

    @property
    def duplicated(self) -> int:
        dlq_extra = sum(n - 1 for n in self.dead_counts.values() if n > 1)
        return dlq_extra + (self.processed_rows - len(self.processed_ids))

    @property
    def strangers(self) -> set[str]:
        """Ids in the store or the DLQ that were never produced (there must be none)."""
        return (self.processed_ids | set(self.dead_counts)) - self.produced.keys()

    def line(self) -> str:
        return (
            f"scenario={self.scenario} produced={len(self.produced)} "
            f"processed={len(self.processed)} dead_lettered={len(self.dead_lettered)} "
            f"lost={len(self.lost)} duplicated={self.duplicated}"
        )

    def check(self, threshold: float) -> None:
        """lost == 0, and each order where the price rule sends it (no overlap, no strangers)."""
        assert not self.lost, f"{len(self.lost)} orders lost, e.g. {sorted(self.lost)[:5]}"
        assert not self.strangers, f"ids never produced: {sorted(self.strangers)[:5]}"
        cheap = {oid for oid, price in self.produced.items() if price <= threshold}
        assert self.processed == cheap, "every cheap order processed, no expensive one"
        assert self.dead_lettered == self.produced.keys() - cheap, "every expensive one in the DLQ"


@pytest.fixture
def reconcile(request: pytest.FixtureRequest) -> Callable[..., Reconciliation]:
    """``reconcile(name, settings)``: account for every produced order, print and record the
    scenario line (shown again in the terminal summary), return the details."""

    def run(name: str, settings: Settings) -> Reconciliation:
        produced = orders_in_topic(settings)
        ids, rows = processed_counts(settings.effective_database_url)
        dead: Counter[str] = Counter()
        for envelope in dlq_envelopes(settings):
            order = envelope.get("failed_order") or {}
            dead[order.get("orderId", "<undecoded>")] += 1
        result = Reconciliation(name, produced, ids, dead, rows)
        line = result.line()
        print(line)
        request.config.stash[_LINES].append(line)
        return result

    return run


@pytest.fixture
def record_line(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``record_line(line)``: print a scenario line and repeat it in the terminal summary."""

    def record(line: str) -> None:
        print(line)
        request.config.stash[_LINES].append(line)

    return record


def unaccounted(settings: Settings, produced: set[str]) -> set[str]:
    """Produced ids that are neither processed nor named by a dead letter (yet)."""
    ids, _ = processed_counts(settings.effective_database_url)
    missing = produced - ids
    if missing:
        missing -= {(e.get("failed_order") or {}).get("orderId") for e in dlq_envelopes(settings)}
    return missing


@pytest.fixture
def all_settled(
    produced_orders: Callable[[Settings], dict[str, float]],
) -> Callable[..., None]:
    """``all_settled(settings, timeout_s, consumers=())``: wait (bounded) until every order
    in the orders topic is processed or dead-lettered, or one of ``consumers`` has exited;
    then the reconciliation says what is missing.

    A cheap check (processed rows + DLQ records) gates the full one (every id looked up).
    """

    def wait(settings: Settings, timeout_s: float, consumers: Sequence[Proc] = ()) -> None:
        produced = set(produced_orders(settings))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and all(c.running for c in consumers):
            done = processed_count(settings.effective_database_url)
            dead = end_offsets(settings.bootstrap_servers, settings.dlq_topic)
            if done + dead >= len(produced) and not unaccounted(settings, produced):
                return
            time.sleep(1.0)

    return wait


# -- a broker of our own -------------------------------------------------------------------


@pytest.fixture
def dedicated_broker(tmp_path: Path) -> Iterator[Any]:
    """A single-node Kafka broker of this test's own on free loopback ports (stop and start
    it with ``.down()``/``.up()``); always stopped by pid at the end."""
    from devstack.kafka import KafkaBroker
    from devstack.settings import DevstackSettings

    libs = KafkaBroker().paths.libs  # the checkout's jars; Maven fetches them on first use
    settings = DevstackSettings(
        devstack_dir=tmp_path / "broker",
        kafka_port=free_ports()[0],
        kafka_controller_port=free_ports()[0],
        kafka_start_timeout_s=120,
    )
    settings.devstack_dir.mkdir()
    broker = KafkaBroker(settings, libs_dir=libs)
    pids = remember_pids([broker])
    try:
        broker.up()
        yield broker
    finally:
        broker.down()
        stop_all(pids)
        shutil.rmtree(settings.devstack_dir / "kafka-data", ignore_errors=True)


def remember_pids(brokers: Sequence[Any]) -> set[int]:
    """Every pid the brokers' ``start`` ever spawns (their ``up`` calls it), so a finalizer
    stops by pid whatever a test left running (``stop_all``)."""
    pids: set[int] = set()
    for broker in brokers:
        original = broker.start

        def start(*args: Any, _original: Any = original, **kwargs: Any) -> int | None:
            pid: int | None = _original(*args, **kwargs)
            if pid is not None:
                pids.add(pid)
            return pid

        broker.start = start
    return pids


def stop_all(pids: set[int]) -> None:
    """Stop (by pid) every remembered broker still alive."""
    from devstack.process import pid_alive, terminate

    for pid in pids:
        if pid_alive(pid):
            terminate(pid, 30)


# -- a replicated cluster of our own ----------------------------------------------------------


@pytest.fixture(scope="module")
def dedicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three combined KRaft nodes of this module's own (``devstack.cluster.KafkaCluster``) on
    free loopback ports: a 3-voter quorum, internal topics with 3 replicas and
    ``min.insync.replicas`` 2. Kill, stop and start nodes with ``.node(i).kill()``,
    ``.node(i).down()``, ``.start_node(i)``; every pid any node ever had is stopped at the end."""
    from devstack.cluster import KafkaCluster
    from devstack.kafka import KafkaBroker
    from devstack.settings import DevstackSettings

    ports = free_ports(6)
    settings = DevstackSettings(
        devstack_dir=tmp_path_factory.mktemp("cluster"), kafka_start_timeout_s=300
    )
    cluster = KafkaCluster(settings, nodes=3, ports=list(zip(ports[::2], ports[1::2], strict=True)),
                           libs_dir=KafkaBroker().paths.libs)  # fmt: skip
    pids = remember_pids(cluster.nodes)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
        stop_all(pids)
        shutil.rmtree(settings.devstack_dir, ignore_errors=True)


def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The broker that leads ``topic[partition]`` now."""
    with Admin({"bootstrap.servers": bootstrap}) as admin:
        return int(admin.list_topics(topic, timeout=30).topics[topic].partitions[partition].leader)


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (UTF-16 code units, 32-bit overflow)."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def transaction_coordinator(bootstrap: str, transactional_id: str) -> int:
    """The broker coordinating ``transactional_id``: the leader of its ``__transaction_state``
    partition, ``abs(hashCode) % partitions`` as the broker computes it
    (``TransactionStateManager.partitionFor``)."""
    with Admin({"bootstrap.servers": bootstrap}) as admin:
        parts = admin.list_topics("__transaction_state", timeout=30).topics["__transaction_state"]
    h = java_string_hash(transactional_id)
    partition = (0 if h == -(1 << 31) else abs(h)) % len(parts.partitions)
    return int(parts.partitions[partition].leader)


def wait_in_sync(cluster: Any, timeout_s: float) -> None:
    """Wait (bounded) until every node runs and no partition lacks an in-sync replica."""
    from orderproc.kafka.replicas import under_replicated

    def in_sync() -> bool:
        if len(cluster.running_pids()) < len(cluster.nodes):
            return False
        with Admin({"bootstrap.servers": cluster.bootstrap, "log_level": 0}) as admin:
            try:
                return not under_replicated(admin.list_topics(timeout=10))
            except KafkaException:
                return False

    wait_for(in_sync, timeout_s, "every partition's replicas back in sync")


@pytest.fixture
def leader_of() -> Callable[[str, str, int], int]:
    """``leader_of(bootstrap, topic, partition)``: the broker leading that partition now."""
    return partition_leader


@pytest.fixture
def coordinator_of() -> Callable[[str, str], int]:
    """``coordinator_of(bootstrap, transactional_id)``: the broker coordinating it."""
    return transaction_coordinator


@pytest.fixture
def replicas_in_sync() -> Callable[[Any, float], None]:
    """``replicas_in_sync(cluster, timeout_s)``: wait until every node runs and every
    partition's replicas are in sync."""
    return wait_in_sync


@pytest.fixture
def records_written() -> Callable[[str, str], int]:
    """``records_written(bootstrap, topic)``: the sum of the topic's end offsets now."""
    return end_offsets


# -- a PostgreSQL cluster of our own ---------------------------------------------------------


def pg_bin() -> Path:
    """The newest installed PostgreSQL's server binaries (Debian's layout)."""
    from devstack.postgres import PG_LIB, installed_version

    version = installed_version()
    if os.geteuid() != 0 or version is None:
        pytest.fail("the PostgreSQL fault scenarios need root and PostgreSQL (make test)")
    return PG_LIB / version / "bin"


class DedicatedPostgres:
    """A throwaway PostgreSQL cluster (initdb as ``postgres``) on a free loopback port."""

    def __init__(self, root: Path, port: int) -> None:
        self.bin = pg_bin()
        self.root = root
        self.port = port
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "postgres.log"
        self.url = f"postgresql+psycopg://orderproc:orderproc@127.0.0.1:{port}/orderproc"

    def _as_postgres(self, *cmd: str, timeout_s: float = 120.0) -> str:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd="/",
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def create(self) -> None:
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "shared_buffers = 32MB\nmax_connections = 40\n"
            )
        self.start()
        for sql in (
            "CREATE ROLE orderproc LOGIN PASSWORD 'orderproc'",
            "CREATE DATABASE orderproc OWNER orderproc",
        ):
            self._as_postgres(
                str(self.bin / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            )

    def start(self) -> None:
        """``pg_ctl start``, waiting until it accepts connections (crash recovery included)."""
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "120",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (a clean stop) or ``-m immediate`` (a crash)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def destroy(self) -> None:
        pid = self.postmaster_pid
        if pid is not None:
            try:
                self.stop("fast")
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the postmaster we started, by its pid
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def dedicated_postgres() -> Iterator[DedicatedPostgres]:
    """A PostgreSQL cluster of this test's own (role and database ``orderproc``), on a
    free loopback port; stopped (``-m fast``) and deleted at the end."""
    # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders.
    root = Path(tempfile.mkdtemp(prefix="orderproc-faults-pg-"))
    cluster = DedicatedPostgres(root, free_ports()[0])
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()


# -- producing with a client we did not write ----------------------------------------------


@pytest.fixture
def kcat_produce(tmp_path: Path) -> Callable[..., None]:
    """``kcat_produce(bootstrap, topic, value, headers=(), key=None)``: one record written by
    Debian's kcat; header names and values, key and value are raw bytes (no NUL in names,
    values or key, no '=' in names: they travel in argv; a None value is a null value)."""
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed (scripts/test.sh installs it)"
    counter = iter(range(10**9))

    def produce(
        bootstrap: str,
        topic: str,
        value: bytes,
        headers: Sequence[tuple[bytes, bytes | None]] = (),
        key: bytes | None = None,
    ) -> None:
        payload = tmp_path / f"kcat-value-{next(counter)}"
        payload.write_bytes(value)
        args = [exe, "-P", "-b", bootstrap, "-t", topic, "-X", "message.max.bytes=2000000"]
        for name, val in headers:
            arg = name if val is None else name + b"=" + val  # a bare name: a null value
            args += ["-H", arg.decode("utf-8", "surrogateescape")]
        if key is not None:
            args += ["-k", key.decode("utf-8", "surrogateescape")]
        done = subprocess.run([*args, str(payload)], capture_output=True, timeout=60, check=False)
        payload.unlink()
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    return produce
