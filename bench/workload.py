"""What the benchmark runs against: its own topics, groups, data and PostgreSQL schema.

Everything is named ``bench-<run id>-...`` and removed by ``Workload.close``, on
success, failure and Ctrl+C alike.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec
from confluent_kafka.cimpl import NewTopic
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import stats
from orderproc.config import ProcessingGuarantee, RetryMode, Settings, WireFormat
from orderproc.errors import OrderProcError
from orderproc.kafka.clients import Admin
from orderproc.kafka.topics import ensure_topics
from orderproc.models import Order
from orderproc.serde import RegistrySerde, local_schema
from orderproc.serde.subjects import register
from orderproc.store.engine import make_engine, normalize_url
from orderproc.store.migrate import upgrade
from orderproc.worker.producer import OrderGenerator, OrderProducer

PARTITIONS = 3
"""Partitions of each data topic: the project's default (``Settings.topic_partitions``)."""

PRICE_THRESHOLD = 100.0

BATCH_SIZE = 500
"""Records per consume() on both sides: the consumer's default ``Settings.batch_size``."""

POLL_TIMEOUT_S = 0.05
"""consume() timeout on both sides. With data waiting it never expires; it only bounds
how long the last, partial batch of a bounded run waits for records that will not come."""


class BenchError(OrderProcError):
    """The benchmark could not run or a run did not do the work it should."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """A topic holding exactly ``orders`` records, ``failing`` of them priced to fail."""

    topic: str
    orders: int
    failing: int

    @property
    def good(self) -> int:
        return self.orders - self.failing


class Workload:
    """The broker- and database-side resources of one benchmark run."""

    def __init__(self, bootstrap: str, database_url: str) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.server_url = normalize_url(database_url)
        self.schema = f"bench_{self.run_id}"
        self.admin = Admin({"bootstrap.servers": bootstrap})
        self._topics: list[str] = []
        self._groups: list[str] = []
        self._schema_created = False
        self._serial = 0

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def name(self, what: str) -> str:
        self._serial += 1
        return f"bench-{self.run_id}-{what}-{self._serial}"

    # -- Kafka -------------------------------------------------------------------------

    def check_broker(self) -> None:
        try:
            self.admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise BenchError(
                f"no Kafka broker at {self.bootstrap} ({exc.args[0].str()}); "
                "start it with: .venv/bin/orderproc dev up"
            ) from exc

    def produce(
        self, n: int, fail_share: float, seed: int, registry_url: str | None = None
    ) -> Dataset:
        """A new topic with ``n`` random orders, ``fail_share`` of them above the threshold.

        With ``registry_url``: in the registry wire format (the schema registered under the
        topic's subject first), else schemaless. The same ``seed`` gives the same orders,
        and the one producer writes both formats with the same batching, so two topics
        differ in their wire format alone.
        """
        topic = self.name("orders-registry" if registry_url else "orders")
        self._create_topics([topic])
        generator = iter(OrderGenerator(PRICE_THRESHOLD, fail_share, random.Random(seed)))
        failing = 0

        def orders() -> Iterator[Order]:
            nonlocal failing
            for order in generator:
                failing += order.price > PRICE_THRESHOLD
                yield order

        settings = Settings(
            bootstrap_servers=self.bootstrap,
            orders_topic=topic,
            schema_registry_url=registry_url,
            wire_format=WireFormat.REGISTRY if registry_url else WireFormat.SCHEMALESS,
        )
        if registry_url:
            wire = RegistrySerde.from_settings(settings)
            register(wire.client, wire.subject(), local_schema())
        stats = OrderProducer(settings, echo=None).run(orders(), count=n, rate=0)
        if stats.delivered != n:
            raise BenchError(f"only {stats.delivered} of {n} orders were delivered to {topic}")
        return Dataset(topic, n, failing)

    def topic(self, what: str) -> str:
        """A new empty topic of its own."""
        topic = self.name(what)
        self._create_topics([topic])
        return topic

    def records_in(self, topic: str) -> int:
        """How many records ``topic`` ever got: the sum of its partitions' end offsets."""
        metadata = self.admin.list_topics(topic, timeout=30).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        ends = self.admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})
        return sum(future.result(timeout=30).offset for future in ends.values())

    def group(self, kind: str) -> str:
        """A fresh consumer group: every run reads its topic from the beginning."""
        group = self.name(f"group-{kind}")
        self._groups.append(group)
        return group

    def consumer_settings(
        self, dataset: Dataset, kind: str, registry_url: str | None = None
    ) -> Settings:
        """Settings of one OrderConsumer run, its retry and DLQ topics already created.

        Creating them here, not in ``OrderConsumer.run``, keeps topic creation and the
        metadata refresh it causes out of the timed part of the run.
        """
        settings = Settings(
            bootstrap_servers=self.bootstrap,
            orders_topic=dataset.topic,
            dlq_topic=self.name("dlq"),
            retry_topic_prefix=self.name("retry"),
            consumer_group=self.group(kind),
            database_url=self.pg_url,
            topic_partitions=PARTITIONS,
            price_threshold=PRICE_THRESHOLD,
            retry_mode=RetryMode.NON_BLOCKING,
            max_attempts=2,
            backoff_initial_s=0.05,
            backoff_max_s=1.0,
            batch_size=BATCH_SIZE,
            poll_timeout_s=POLL_TIMEOUT_S,
            processing_guarantee=(
                ProcessingGuarantee.EXACTLY_ONCE
                if kind == stats.CONSUMER_PG_EOS
                else ProcessingGuarantee.AT_LEAST_ONCE
            ),
            instance_id=f"bench-{kind}",
            schema_registry_url=registry_url,
            wire_format=WireFormat.REGISTRY if registry_url else WireFormat.SCHEMALESS,
        )
        self._topics.extend([settings.dlq_topic, *settings.retry_topics])
        ensure_topics(settings, [settings.dlq_topic, *settings.retry_topics])
        return settings

    def _create_topics(self, names: list[str]) -> None:
        self._topics.extend(names)
        new = [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in names]
        for future in self.admin.create_topics(new, operation_timeout=30).values():
            future.result()

    # -- PostgreSQL ----------------------------------------------------------------------

    @property
    def pg_url(self) -> str:
        """SQLAlchemy URL of the benchmark's own schema."""
        parsed = make_url(self.server_url)
        query = {**parsed.query, "options": f"-csearch_path={self.schema}"}
        return parsed.set(query=query).render_as_string(hide_password=False)

    def create_schema(self) -> None:
        root = make_engine(self.server_url)
        try:
            with root.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        except Exception as exc:
            raise BenchError(
                f"cannot use PostgreSQL at {make_url(self.server_url).render_as_string()}: "
                f"{exc.__class__.__name__}; start it with: "
                ".venv/bin/python -m devstack.postgres up"
            ) from exc
        finally:
            root.dispose()
        self._schema_created = True
        engine = make_engine(self.pg_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def pg_connect(self) -> psycopg.Connection[Any]:
        """A plain psycopg 3 connection to the benchmark's schema (for the COPY baseline)."""
        u = make_url(self.server_url)
        return psycopg.connect(
            host=u.host,
            port=u.port,
            user=u.username,
            password=u.password,
            dbname=u.database,
            options=f"-c search_path={self.schema}",
        )

    def reset_table(self) -> None:
        with self.pg_connect() as conn:
            conn.execute("TRUNCATE processed_orders")

    def count_rows(self) -> int:
        with self.pg_connect() as conn:
            row = conn.execute("SELECT count(*) FROM processed_orders").fetchone()
        return int(row[0]) if row else 0

    # -- cleanup -------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self._clean_up()
        finally:
            self.admin.close()

    def _clean_up(self) -> None:
        if self._groups:
            futures = self.admin.delete_consumer_groups(self._groups, request_timeout=30)
            for future in futures.values():
                with contextlib.suppress(KafkaException):
                    future.result()
            self._groups = []
        if self._topics:
            for future in self.admin.delete_topics(self._topics, operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    future.result()
            self._topics = []
        if self._schema_created:
            root = make_engine(self.server_url)
            try:
                with root.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            finally:
                root.dispose()
            self._schema_created = False
