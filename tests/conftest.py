"""Shared fixtures: a real Kafka broker, real PostgreSQL, unique topics and schemas per test.

* ``ORDERPROC_TEST_BOOTSTRAP`` reuses a running broker; otherwise the local
  devstack broker is started (and stopped at the end if this session started it).
* ``ORDERPROC_TEST_DATABASE_URL`` reuses a PostgreSQL server; otherwise the
  devstack PostgreSQL is started. Each test gets its own schema.
* ``ORDERPROC_TEST_REGISTRY_URL`` reuses a schema registry; otherwise the first test
  that needs one starts the dev stack's (Apicurio, fetched once into ``.devstack/``) on a
  free port with its own storage, stopped at the end. Each test gets its own subject
  (its own orders topic).

Helpers that several test modules need are fixtures here (test modules never
import each other): reading topics, the environment of a CLI subprocess, DLQ
records written as the consumer writes them, DLQ rows stored as the drain stores
them, and the report's known input with the numbers it must give.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import NewTopic
from pydantic import SecretStr
from sqlalchemy import Engine, func, insert, select

from orderproc.clock import now_ms, utcnow
from orderproc.config import RetryMode, Settings
from orderproc.dlq.envelope import Failure, build_envelope, encode_envelope, event_row
from orderproc.dlq.store import DlqStore
from orderproc.errors import HIGH_PRICE_REASON, BusinessRuleError, DeserializationError
from orderproc.headers import Header
from orderproc.kafka.clients import Admin
from orderproc.models import Order, Source
from orderproc.records import Record
from orderproc.report.aggregate import DlqReport
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine, normalize_url
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.store.tables import DlqEvent, ProcessedOrder
from orderproc.worker.consumer import OrderConsumer
from orderproc.worker.routing import FailureRouter
from tests.support import free_ports, http_get, migrated_schema, read_committed, wait_until

RunCli = Callable[..., subprocess.CompletedProcess[str]]

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.live_airflow"]  # the session's local Airflow, started on first use

_SCRATCH = pytest.StashKey[Path]()
_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()


def pytest_configure(config: pytest.Config) -> None:
    """Point Airflow, orderproc's data folder and matplotlib's cache at a scratch directory.

    Runs before collection, so Airflow (which reads its configuration when it is first
    imported) sees it; nothing is set while a module is imported. Files written by a
    test that forgets its own ``data_dir`` land in the scratch folder, not the home folder.
    """
    scratch = Path(tempfile.mkdtemp(prefix="orderproc-tests-"))
    airflow_home = scratch / "airflow"
    airflow_home.mkdir()
    values = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "ORDERPROC_DATA_DIR": str(scratch / "data"),
        "MPLCONFIGDIR": str(scratch / "matplotlib"),  # its font cache, not in the home folder
    }
    config.stash[_SCRATCH] = scratch
    config.stash[_SAVED_ENV] = {name: os.environ.get(name) for name in values}
    os.environ.update(values)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment back as it was and remove the scratch directory."""
    for name, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    scratch = config.stash.get(_SCRATCH, None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def _uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the scratch Airflow metadata DB once (``dag.test()`` and the in-process API
    server need it)."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "db", "migrate"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


# -- Kafka ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka 4 broker."""
    given = os.environ.get("ORDERPROC_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from devstack.kafka import KafkaBroker

    broker = KafkaBroker()
    result = broker.up()
    yield broker.bootstrap
    if result.started:
        broker.down()


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> Iterator[Admin]:
    with Admin({"bootstrap.servers": kafka_bootstrap}) as client:
        yield client


@pytest.fixture
def topic_factory(admin: Admin) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics; they are deleted after the test."""
    created: list[str] = []

    def make(
        prefix: str = "t",
        partitions: int = 1,
        config: dict[str, str] | None = None,
        name: str | None = None,
    ) -> str:
        topic = name or f"{prefix}-{_uid()}"
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
        )
        futures[topic].result()
        created.append(topic)
        return topic

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()


@pytest.fixture
def make_producer(kafka_bootstrap: str) -> Callable[..., Producer]:
    def make(**conf: Any) -> Producer:
        return Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, **conf})

    return make


@pytest.fixture
def make_consumer(kafka_bootstrap: str) -> Iterator[Callable[..., Consumer]]:
    consumers: list[Consumer] = []

    def make(**conf: Any) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"test-{_uid()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **conf,
            }
        )
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        with contextlib.suppress(RuntimeError):  # already closed by the test
            consumer.close()


@pytest.fixture
def drain_topic(make_consumer: Callable[..., Consumer]) -> Callable[..., list[Message]]:
    """``drain_topic(topic, expected, timeout_s=60)``: read ``expected`` records (bounded).

    Each call reads from the beginning in a consumer group of its own.
    """

    def drain(topic: str, expected: int, timeout_s: float = 60.0) -> list[Message]:
        consumer = make_consumer()
        consumer.subscribe([topic])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(expected - len(out), timeout=1.0):
                if msg.error() is None:
                    out.append(msg)
        return out

    return drain


@pytest.fixture
def read_all(kafka_bootstrap: str) -> Callable[..., list[Message]]:
    """``read_all(topic)``: every committed record of ``topic`` up to its current end, as a
    ``read_committed`` consumer downstream sees it (``tests/support.py``)."""
    return functools.partial(read_committed, kafka_bootstrap)


@pytest.fixture
def headers_of() -> Callable[[Message], dict[str, str]]:
    """A record's headers as text (the last value of a name wins)."""

    def decode(msg: Message) -> dict[str, str]:
        return {k: (v or b"").decode() for k, v in msg.headers() or []}

    return decode


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


# -- Schema registry -------------------------------------------------------------------


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Confluent-compatible schema registry (its ``ccompat`` API)."""
    given = os.environ.get("ORDERPROC_TEST_REGISTRY_URL")
    if given:
        yield given
        return
    from devstack.registry import SchemaRegistry

    registry = SchemaRegistry(home=tmp_path_factory.mktemp("registry"), port=free_port())
    registry.up()
    try:
        yield registry.url
    finally:
        registry.down()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def registry_settings(
    make_settings: Callable[..., Settings], schema_registry: str
) -> Callable[..., Settings]:
    """``make_settings`` on the registry wire format: this test's topics, so its own subject."""

    def make(**overrides: Any) -> Settings:
        return make_settings(schema_registry_url=schema_registry, **overrides)

    return make


# -- Databases -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a real PostgreSQL server (its default schema is never written by tests)."""
    given = os.environ.get("ORDERPROC_TEST_DATABASE_URL")
    if given:
        return normalize_url(given)
    from devstack.postgres import postgres_up

    return postgres_up()


@pytest.fixture
def pg_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated, empty PostgreSQL schema of this test's own."""
    with migrated_schema(postgres_server_url, f"t_{_uid()}") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'orderproc.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty store on each dialect in turn."""
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def count_rows() -> Callable[..., int]:
    """``count_rows(engine, model=DlqEvent)``: rows of one table."""

    def count(engine: Engine, model: Any = DlqEvent) -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(model)) or 0)

    return count


# -- Settings for one test -------------------------------------------------------------


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> Callable[..., Settings]:
    """Settings whose topics, groups and files belong to this test alone (topics created)."""

    def make(*, partitions: int = 1, create: bool = True, **overrides: Any) -> Settings:
        uid = _uid()
        values: dict[str, Any] = {
            "bootstrap_servers": kafka_bootstrap,
            "orders_topic": f"orders-{uid}",
            "dlq_topic": f"orders_dlq-{uid}",
            "retry_topic_prefix": f"orders-{uid}.retry",
            "consumer_group": f"order-group-{uid}",
            "dlq_group": f"dlq-group-{uid}",
            "topic_partitions": partitions,
            "data_dir": tmp_path / f"data-{uid}",
            "database_url": f"sqlite:///{tmp_path / f'{uid}.db'}",
            "retry_mode": RetryMode.NON_BLOCKING,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 1.0,
            "backoff_jitter": 0.0,
            "poll_timeout_s": 0.2,
        }
        values.update(overrides)
        settings = Settings(**values)
        if create:
            names = [settings.orders_topic, settings.dlq_topic, *settings.retry_topics]
            for name in names:
                topic_factory(name=name, partitions=partitions)
        return settings

    return make


@pytest.fixture
def settings_env() -> Callable[[Settings], dict[str, str]]:
    """The environment of an ``orderproc`` subprocess run with these settings (and no others)."""

    def env(settings: Settings) -> dict[str, str]:
        out = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
        for name, value in settings.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):  # str() would give the mask, not the password
                value = value.get_secret_value()
            out[f"ORDERPROC_{name.upper()}"] = (
                value.value if isinstance(value, Enum) else str(value)
            )
        return out

    return env


# -- Orders and dead letters -----------------------------------------------------------


@pytest.fixture
def run_cli(settings_env: Callable[[Settings], dict[str, str]]) -> RunCli:
    """``run_cli(settings, *args)``: ``python -m orderproc <args>`` as a process with these
    settings, as a stranger runs it."""

    def run(
        settings: Settings, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orderproc", *args],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def make_orders() -> Callable[..., list[Order]]:
    """``make_orders(n, price=150.0, prefix="o")``: orders ``<prefix>-0`` .. of one Laptop each."""

    def make(n: int, *, price: float = 150.0, prefix: str = "o") -> list[Order]:
        return [Order(f"{prefix}-{i}", "Laptop", price) for i in range(n)]

    return make


@pytest.fixture
def dead_letter() -> Callable[..., None]:
    """``dead_letter(settings, orders, headers=None, reason=..., source_offsets=None)``: DLQ
    records written exactly as the live consumer writes them (through ``FailureRouter``),
    acknowledged. Each order failed at its own source offset (counting on across calls),
    unless ``source_offsets`` names them: the same offsets again are the same failures."""
    offsets = itertools.count()

    def write(
        settings: Settings,
        orders: Sequence[Order],
        *,
        headers: list[Header] | None = None,
        reason: str = HIGH_PRICE_REASON,
        source_offsets: Sequence[int] | None = None,
    ) -> None:
        router = FailureRouter(settings)
        now = now_ms()
        where = (
            list(source_offsets) if source_offsets is not None else [next(offsets) for _ in orders]
        )
        for i, order in zip(where, orders, strict=True):
            failure = Failure(
                error=BusinessRuleError(reason),
                attempts=3,
                first_failure_ms=now - 1000,
                last_failure_ms=now,
                source=Source(settings.orders_topic, 0, i, now - 2000),
                consumer_group=settings.consumer_group,
                order=order,
                raw_value=SchemalessSerde().encode(order),
                key=order.order_id.encode(),
            )
            router.to_dlq(failure, headers or [], now_ms=now)
        assert router.flush(30) == 0
        assert router.errors == []

    return write


@pytest.fixture
def produce_raw() -> Callable[[Settings, Sequence[bytes]], None]:
    """``produce_raw(settings, values)``: records in the DLQ that did not come from orderproc."""

    def produce(settings: Settings, values: Sequence[bytes]) -> None:
        producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        for value in values:
            producer.produce(settings.dlq_topic, value=value)
        assert producer.flush(30) == 0

    return produce


@pytest.fixture
def seed_dlq() -> Callable[..., list[int]]:
    """``seed_dlq(store, items, first_offset=0, headers=())``: DLQ rows stored as the drain
    stores them, without going through Kafka; returns their ids.

    An ``Order`` item failed the price rule; ``None`` is a value that did not decode.
    """

    def seed(
        store: DlqStore,
        items: Sequence[Order | None],
        *,
        first_offset: int = 0,
        headers: Sequence[Header] = (),
    ) -> list[int]:
        rows = []
        for i, order in enumerate(items):
            error = (
                BusinessRuleError(HIGH_PRICE_REASON)
                if order
                else DeserializationError("undecodable Avro", b"\xff")
            )
            source = Source("orders", 0, first_offset + i, None)  # one failure per item
            failure = Failure(error, 3, 0, 0, source, "g", order, b"\xff", None)
            envelope = encode_envelope(build_envelope(failure, now_ms=now_ms()))
            key = order.order_id.encode() if order else None
            record = Record("orders_dlq", 0, first_offset + i, key, envelope, list(headers))
            rows.append(event_row(record, drained_at=utcnow()))
        return store.insert_events(rows, actor="test-drain").new_ids

    return seed


@pytest.fixture
def approved_dlq(seed_dlq: Callable[..., list[int]]) -> Callable[..., list[int]]:
    """``approved_dlq(store, orders, first_offset=0, price=None)``: DLQ rows of these orders
    (as ``seed_dlq``), approved by a reviewer, who corrected their price to ``price`` first
    when one is given; returns their ids."""

    def approve(
        store: DlqStore, orders: Sequence[Order], *, first_offset: int = 0,
        price: float | None = None,
    ) -> list[int]:  # fmt: skip
        ids = seed_dlq(store, orders, first_offset=first_offset)
        if price is not None:
            for i in ids:
                store.edit(i, {"price": price}, actor="alice")
        store.approve(ids, actor="alice")
        return ids

    return approve


@pytest.fixture
def dlq_rows() -> Callable[[DlqStore], dict[int, DlqEvent]]:
    """``dlq_rows(store)``: every DLQ row, by id."""

    def rows(store: DlqStore) -> dict[int, DlqEvent]:
        return {e.id: e for e in store.list_events(limit=1000)}

    return rows


@pytest.fixture
def end_offset(read_all: Callable[..., list[Message]]) -> Callable[[Settings], int]:
    """``end_offset(settings)``: how many committed records the orders topic holds."""

    def total(settings: Settings) -> int:
        return len(read_all(settings.orders_topic))

    return total


# -- The report's known input ----------------------------------------------------------


@dataclass(frozen=True)
class KnownReportInput:
    """A store content whose report numbers are known exactly (``seed``, then ``check``).

    Used on SQLite (unit), PostgreSQL (integration) and through the report DAG.
    """

    t0: datetime = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    high: str = HIGH_PRICE_REASON
    decode: str = "cannot decode Avro value"

    def at(self, hours: float) -> datetime:
        """``hours`` after ``t0``."""
        return self.t0 + timedelta(hours=hours)

    @property
    def now(self) -> datetime:
        """The report's time: one day and one hour after ``t0``."""
        return self.at(25)

    def processed(self) -> list[tuple[str, str, float, datetime, str | None]]:
        """order_id, product, price, processed_at, replay_id."""
        return [
            ("o-1", "widget", 10.0, self.at(1), None),
            ("o-2", "widget", 20.0, self.at(2), None),
            ("o-3", "gadget", 30.0, self.at(3), None),
            ("o-4", "gadget", 70.0, self.at(4), "replay-1"),  # o-4 replayed, price 150 -> 70
            ("o-9", "widget", 90.0, self.at(5.5), "replay-8"),  # o-9 got through on replay 2
        ]

    def dead_lettered(self) -> list[tuple[Any, ...]]:
        """order_id, product, price, reason, category, status, dead_lettered_at, replayed_at.

        The n-th row (from 1), if replayed, was replayed by the run ``replay-<n>``.
        """
        high, at = self.high, self.at
        return [
            ("o-4", "gadget", 150.0, high, "business_rule", "replayed", at(0.5), at(1)),
            ("o-5", "widget", 200.0, high, "business_rule", "replayed", at(1.5), at(5)),
            ("o-6", "widget", 120.0, high, "business_rule", "new", at(1), None),
            ("o-7", "gadget", 300.0, high, "business_rule", "approved", at(2), None),
            (None, None, None, self.decode, "deserialization", "rejected", None, None),  # +6h
            ("o-8", "widget", 180.0, high, "business_rule", "parked", at(0), None),
            ("o-9", "widget", 225.0, high, "business_rule", "replayed", at(2.5), at(3)),
            # replay-7's copy failed again and came back; replay-8 (corrected) got through.
            ("o-9", "widget", 225.0, high, "business_rule", "replayed", at(3.2), at(5.2)),
        ]

    def seed(self, engine: Engine) -> None:
        """Insert the known rows into a migrated, empty store."""
        processed = [
            {"order_id": oid, "product": product, "price": price, "attempts": 1,
             "source_topic": "orders", "source_partition": 0, "source_offset": offset,
             "processed_at": at, "replay_id": replay_id}
            for offset, (oid, product, price, at, replay_id) in enumerate(self.processed())
        ]  # fmt: skip
        dead = [self._dlq_row(offset, *row) for offset, row in enumerate(self.dead_lettered())]
        with engine.begin() as conn:
            conn.execute(insert(ProcessedOrder), processed)
            conn.execute(insert(DlqEvent), dead)

    def _dlq_row(self, offset: int, *values: Any) -> dict[str, Any]:
        order_id, product, price, reason, category, status, failed_at, replayed_at = values
        return {
            "dlq_topic": "orders_dlq", "dlq_partition": 0, "dlq_offset": offset,
            "order_id": order_id, "product": product, "price": price, "reason": reason,
            "category": category, "retryable": False, "attempts": 3, "status": status,
            "dead_lettered_at": failed_at, "drained_at": failed_at or self.at(6),
            "replayed_at": replayed_at, "replay_count": 1 if replayed_at else 0,
            "replay_id": f"replay-{offset + 1}" if replayed_at else None,
        }  # fmt: skip

    def check(self, report: DlqReport) -> None:
        """The all-time report of the known input, as of ``now``."""
        assert dict(report.inflow_by_reason) == {self.high: 7, self.decode: 1}
        assert dict(report.inflow_by_category) == {"business_rule": 7, "deserialization": 1}
        assert dict(report.inflow_by_product) == {"widget": 5, "gadget": 2, "(unknown)": 1}
        assert report.dlq_total == 8
        assert (report.failed_prices.count, report.failed_prices.min) == (7, 120.0)
        assert (report.failed_prices.max, report.failed_prices.mean) == (300.0, 200.0)
        assert report.failed_prices.median == 200.0
        assert (report.processed_prices.count, report.processed_prices.min) == (5, 10.0)
        assert (report.processed_prices.max, report.processed_prices.mean) == (90.0, 44.0)
        assert report.processed_prices.median == 30.0
        assert report.running_average == 44.0
        assert dict(report.running_average_by_product) == {"gadget": 50.0, "widget": 40.0}
        assert [avg for _, avg in report.running_average_curve] == [10.0, 15.0, 20.0, 32.5, 44.0]
        assert report.running_average_curve[-1][0] == self.at(5.5)
        assert dict(report.backlog) == {
            "new": 1, "approved": 1, "rejected": 1, "replayed": 4, "parked": 1
        }  # fmt: skip
        assert report.oldest_unresolved_at == self.at(1)  # o-6 (new); o-8 parked, o-4 replayed
        assert report.oldest_unresolved_age == timedelta(hours=24)
        # o-4 and o-9's second replay succeeded; o-9's first copy failed again, o-5 is pending.
        assert (report.replay.replayed, report.replay.succeeded) == (4, 2)
        assert report.replay.success_rate == 0.5


@pytest.fixture
def known_input() -> KnownReportInput:
    """The report's known input and the numbers it must give."""
    return KnownReportInput()


@pytest.fixture
def read_report_csv() -> Callable[[Path], dict[tuple[str, str, str], str]]:
    """``read_report_csv(path)``: a written report CSV keyed by ``(section, key, metric)``."""

    def read(path: Path) -> dict[tuple[str, str, str], str]:
        with path.open(newline="", encoding="utf-8") as fh:
            return {(r["section"], r["key"], r["metric"]): r["value"] for r in csv.DictReader(fh)}

    return read


@pytest.fixture
def table_rows() -> Callable[[str], list[list[str]]]:
    """``table_rows(text)``: the cells of every line of a rendered table, stripped.

    Reads tabulate's ``simple`` and ``plain`` tables (cells two or more spaces apart)
    and Markdown tables (cells between unescaped pipes), so tests check the values a
    reader sees, not the padding.
    """

    def rows(text: str) -> list[list[str]]:
        out = []
        for line in text.splitlines():
            line = line.strip()
            if not line or set(line) <= set("-|: "):
                continue  # blank, or a rule under the headers
            if line.startswith("|"):
                cells = re.split(r"(?<!\\)\|", line.strip("|"))
                out.append([c.strip().replace("\\|", "|") for c in cells])
            else:
                out.append(re.split(r"\s{2,}", line))
        return out

    return rows


# -- A client we did not write -------------------------------------------------------


@pytest.fixture
def kcat(tmp_path: Path) -> Callable[..., None]:
    """``kcat(settings, value, topic=None, headers=(), key=None)``: produce one record with
    Debian's kcat; header names and values are raw bytes."""
    exe = shutil.which("kcat")
    assert exe, "kcat is not installed (scripts/test.sh installs it)"

    def produce(
        settings: Settings,
        value: bytes,
        *,
        topic: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        key: bytes | None = None,
    ) -> None:
        payload = tmp_path / f"value-{time.monotonic_ns()}"
        payload.write_bytes(value)
        args = [exe, "-P", "-b", settings.bootstrap_servers, "-t", topic or settings.orders_topic]
        args += ["-X", "message.max.bytes=2000000"]
        for name, val in headers:
            args += ["-H", (name + b"=" + val).decode("utf-8", "surrogateescape")]
        if key is not None:
            args += ["-k", key.decode("utf-8", "surrogateescape")]
        # A file named after the options is one message, whatever bytes it holds.
        done = subprocess.run([*args, str(payload)], capture_output=True, timeout=60,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    return produce


# -- Workers as processes ----------------------------------------------------------------


@dataclass
class RunningWorker:
    """A worker process (``python -m orderproc ...``) serving ``/metrics`` on ``port``."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        code, body = http_get(f"{self.url}/metrics")
        return body if code == 200 else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@pytest.fixture
def start_worker(
    settings_env: Callable[[Settings], dict[str, str]], tmp_path: Path
) -> Iterator[Callable[..., RunningWorker]]:
    """``start_worker(settings, *args, env=None)``: ``orderproc <args> --metrics-port P`` as a
    process on a free loopback port, ready once its ``/healthz`` answers; stopped (by its
    pid) after the test. Its output goes to a file under ``tmp_path``."""
    started: list[RunningWorker] = []

    def start(settings: Settings, *args: str, env: dict[str, str] | None = None) -> RunningWorker:
        (port,) = free_ports(1)
        log = (tmp_path / f"{args[0]}-{port}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "orderproc", *args, "--metrics-port", str(port)],
            env={**settings_env(settings), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker = RunningWorker(proc, port)
        started.append(worker)

        def ready() -> bool:
            assert proc.poll() is None, f"{args[0]} exited: {_tail(log.name)}"
            return http_get(f"{worker.url}/healthz")[0] == 200

        wait_until(ready, timeout_s=90, what=f"{args[0]} to serve /healthz")
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def live_consumer() -> Iterator[Callable[[Settings, str], OrderConsumer]]:
    """``live_consumer(settings, database_url)``: the live consumer (``OrderConsumer``, as
    ``orderproc consume`` runs it) on a thread of its own, writing to that store; stopped
    after the test."""
    running: list[tuple[OrderConsumer, threading.Thread, Engine]] = []

    def start(settings: Settings, database_url: str) -> OrderConsumer:
        engine = make_engine(database_url)
        consumer = OrderConsumer(settings, OrderRepository(engine), echo=None)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        running.append((consumer, thread, engine))
        return consumer

    yield start
    for consumer, thread, engine in running:
        consumer.stop()
        thread.join(60)
        engine.dispose()
        assert not thread.is_alive(), "the live consumer did not stop"


def _tail(path: str) -> str:
    return Path(path).read_text(errors="replace")[-2000:]
