"""The ground is real: a Kafka 4 broker and PostgreSQL/SQLite, exercised directly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import Message, Producer
from sqlalchemy import text

from orderproc.kafka.clients import Admin
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine
from orderproc.store.processed import OrderRepository, ProcessedRow

pytestmark = pytest.mark.integration


def test_avro_order_round_trips_bit_exact(
    topic_factory: Callable[..., str],
    make_producer: Callable[..., Producer],
    drain_topic: Callable[..., list[Message]],
) -> None:
    topic = topic_factory("smoke")
    serde = SchemalessSerde()
    sent = serde.encode(Order("0b1c7f0e-aaaa-4bbb-8ccc-123456789abc", "item3", 45.67))
    producer = make_producer()
    producer.produce(topic, key=b"k1", value=sent)
    assert producer.flush(30) == 0

    [msg] = drain_topic(topic, 1)

    assert msg.value() == sent
    assert msg.key() == b"k1"
    decoded = serde.decode(msg.value())
    assert decoded == Order("0b1c7f0e-aaaa-4bbb-8ccc-123456789abc", "item3", 45.66999816894531)
    assert f"{decoded.price:.2f}" == "45.67"  # Avro float is 32-bit; shown, it is the same cents


def test_multi_partition_topic_created_through_admin_api(
    topic_factory: Callable[..., str], admin: Admin
) -> None:
    topic = topic_factory("multi", partitions=6)
    metadata = admin.list_topics(topic, timeout=10)
    assert sorted(metadata.topics[topic].partitions) == list(range(6))


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_sqlalchemy_round_trip(dialect: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "sqlite_url")
    engine = make_engine(url)
    assert engine.dialect.name == dialect
    repo = OrderRepository(engine)
    row = ProcessedRow("o-1", "item2", 12.5, 1, "orders", 0, 7, datetime.now(UTC))

    assert repo.record_processed([row]) == {"o-1"}
    assert repo.record_processed([row]) == set()  # idempotent on orderId
    assert repo.price_totals() == {"item2": (1, 12.5)}
    with engine.connect() as conn:
        assert conn.execute(text("select source_offset from processed_orders")).scalar() == 7
    engine.dispose()
