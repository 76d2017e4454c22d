"""Shared fixtures: a real Kafka broker, real PostgreSQL, unique topics and schemas per test.

* ``ORDERPROC_TEST_BOOTSTRAP`` reuses a running broker; otherwise the local
  devstack broker is started (and stopped at the end if this session started it).
* ``ORDERPROC_TEST_DATABASE_URL`` reuses a PostgreSQL server; otherwise the
  devstack PostgreSQL is started. Each test gets its own schema.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from orderproc.config import RetryMode, Settings
from orderproc.store.engine import make_engine, normalize_url
from orderproc.store.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent

# Airflow reads its configuration at import: point it at a scratch home before any test imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="orderproc-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"


def _uid() -> str:
    return uuid.uuid4().hex[:10]


# -- Kafka ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka 4 broker."""
    given = os.environ.get("ORDERPROC_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    from orderproc.devstack.kafka import KafkaBroker

    broker = KafkaBroker(Settings())
    result = broker.up()
    yield broker.bootstrap
    if result.started:
        broker.down()


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic_factory(admin: AdminClient) -> Iterator[Callable[..., str]]:
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


# -- Databases -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a real PostgreSQL server (its default schema is never written by tests)."""
    given = os.environ.get("ORDERPROC_TEST_DATABASE_URL")
    if given:
        return normalize_url(given)
    from orderproc.devstack.postgres import postgres_up

    return postgres_up()


def _with_search_path(url: str, schema: str) -> str:
    parsed = make_url(url)
    query = dict(parsed.query)
    query["options"] = f"-csearch_path={schema}"
    return parsed.set(query=query).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated, empty PostgreSQL schema of this test's own."""
    schema = f"t_{_uid()}"
    root = make_engine(postgres_server_url)
    with root.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(postgres_server_url, schema)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with root.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    root.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
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


# -- Settings for one test -------------------------------------------------------------


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Any
) -> Callable[..., Settings]:
    """Settings whose topics and groups belong to this test alone (topics created)."""

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
            "database_url": f"sqlite:///{tmp_path / f'{uid}.db'}",
            "retry_mode": RetryMode.NON_BLOCKING,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 1.0,
            "backoff_jitter": 0.0,
            "poll_timeout_s": 0.2,
            "devstack_dir": tmp_path / "devstack",
        }
        values.update(overrides)
        settings = Settings(**values)
        if create:
            names = [settings.orders_topic, settings.dlq_topic, *settings.retry_topics]
            for name in names:
                topic_factory(name=name, partitions=partitions)
        return settings

    return make
