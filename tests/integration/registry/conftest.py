"""The registry scenarios' shared pieces: later versions of the order schema, a producer we
did not write (confluent-kafka's ``AvroSerializer``), and a bounded consumer run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy import select

from orderproc.config import Settings
from orderproc.serde import OrderSchema, OrderSerde
from orderproc.serde.registry import RegistryClient
from orderproc.serde.subjects import register
from orderproc.store.engine import open_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.store.tables import ProcessedOrder
from orderproc.worker.consumer import OrderConsumer
from tests.registry_support import Run, Subject


@pytest.fixture
def registry(schema_registry: str) -> RegistryClient:
    return RegistryClient(schema_registry)


@pytest.fixture
def versions(registry: RegistryClient) -> Callable[..., Subject]:
    """``versions(settings, v1=..., v2=...)``: register these schemas in order (BACKWARD)."""

    def make(settings: Settings, **texts: str) -> Subject:
        subject = f"{settings.orders_topic}-value"
        ids = {
            name: register(registry, subject, OrderSchema.of(text)).schema_id
            for name, text in texts.items()
        }
        return Subject(subject, ids)

    return make


@pytest.fixture
def stranger_produce(schema_registry: str) -> Callable[..., None]:
    """``stranger_produce(settings, schema_text, records)``: records written by
    confluent-kafka's own ``AvroSerializer`` (the schema looked up, never registered)."""

    def produce(settings: Settings, schema_text: str, records: Sequence[dict[str, Any]]) -> None:
        client = SchemaRegistryClient({"url": schema_registry})
        conf = {"auto.register.schemas": False, "use.latest.version": False}
        serializer = AvroSerializer(client, schema_text, conf=conf)
        producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        ctx = SerializationContext(settings.orders_topic, MessageField.VALUE)
        for record in records:
            producer.produce(settings.orders_topic, key=record["orderId"].encode(),
                             value=serializer(record, ctx))  # fmt: skip
        assert producer.flush(30) == 0

    return produce


@pytest.fixture
def consume() -> Callable[..., Run]:
    """``consume(settings, serde=None, idle_exit_s=4)``: the order consumer until idle."""

    def run(settings: Settings, serde: OrderSerde | None = None, idle_exit_s: float = 4) -> Run:
        with open_engine(settings.effective_database_url) as engine:
            upgrade(engine)
            consumer = OrderConsumer(settings, OrderRepository(engine), echo=None, serde=serde)
            stats = consumer.run(idle_exit_s=idle_exit_s)
            with engine.connect() as conn:
                rows = conn.execute(select(ProcessedOrder.order_id, ProcessedOrder.price)).all()
        return Run(stats, {str(oid): float(price) for oid, price in rows})

    return run
