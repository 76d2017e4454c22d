"""The schema registry stops for 15 s while 500 orders/s flow: an outage, not bad records.

The registry is this test's own (the dev stack's code on a free port, its own H2 file):
stopping the session's would break everybody else's tests. The producer has its
schema id cached and never notices. The consumer has the v1 id cached and goes on
with it; a second writer sends orders with a new version's id (v2, a field added with
a default) during the outage: the consumer cannot fetch that schema, so it holds those
partitions (nothing committed past what it handled), says once that it waits, and reads
them when the registry is back. Lost 0, no dead letter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from devstack.registry import SchemaRegistry
from orderproc.config import Settings
from orderproc.kafka.topics import ensure_topics
from orderproc.models import Order
from orderproc.serde import OrderSchema, RegistrySerde, local_schema, value_context
from orderproc.serde.registry import RegistryClient
from orderproc.serde.subjects import register
from tests.conftest import free_port
from tests.registry_support import V2

pytestmark = pytest.mark.faults

OUTAGE_S = 15.0
WAITING = "waiting for the schema registry"


def test_registry_stopped_15s_at_500_orders_a_second_loses_nothing_and_dead_letters_nothing(
    scale: int,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    all_settled: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
) -> None:
    registry = SchemaRegistry(home=tmp_path / "registry", port=free_port())
    registry.up()
    try:
        settings = make_settings(create=False, partitions=3, database_url=pg_url,
                                 schema_registry_url=registry.url)  # fmt: skip
        ensure_topics(settings)
        client = RegistryClient(registry.url)
        subject = f"{settings.orders_topic}-value"
        register(client, subject, local_schema())
        v2 = register(client, subject, OrderSchema.of(V2))
        newer = RegistrySerde(client, topic=settings.orders_topic, latest=True)
        assert newer.writer_schema().schema_id == v2.schema_id  # cached before the outage

        total = 16000 * scale  # ~32 s at 500/s: before, during and after the outage
        producer = procs.produce(settings, total, rate=500 * scale, fail_share=0.0)
        consumer = procs.consume(settings, "--log-level", "INFO")
        wait_until(lambda: count_processed(settings) >= total // 5, 180, "a fifth of the orders")

        registry.down()
        assert producer.running and consumer.running
        late = _write_v2_orders(settings, newer, 200 * scale)  # a new id, during the outage
        time.sleep(OUTAGE_S)  # the fault itself: how long the registry stays away
        registry.up()

        assert producer.wait(600) == 0, producer.tail()
        assert produced_summary(producer) == {"produced": total, "delivered": total, "failed": 0}
        all_settled(settings, 300, [consumer])
        assert consumer.running, f"the consumer did not ride out the outage:\n{consumer.tail()}"
        assert consumer.sigterm() == 0, consumer.tail()
        result = reconcile("registry-outage-15s", settings)  # reads orders with the registry
    finally:
        registry.down()
    assert len(result.produced) == total + late
    result.check(settings.price_threshold)  # lost 0, every order processed, no dead letter
    assert result.dead_counts == {}
    said = [line for line in consumer.output().splitlines() if WAITING in line]
    assert len(said) == 1, said  # once, not once a record or a retry
    assert "answers again" in consumer.output()


def _write_v2_orders(settings: Settings, serde: RegistrySerde, n: int) -> int:
    """``n`` cheap orders written with v2's cached id (no registry needed)."""
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True}
    )
    ctx = value_context(settings.orders_topic)
    for i in range(n):
        order = {**Order(f"v2-{i}", "item1", 20.0).to_record(), "currency": "USD"}
        producer.produce(settings.orders_topic, key=order["orderId"].encode(),
                         value=serde.serialize(order, ctx))  # fmt: skip
        producer.poll(0)
    assert producer.flush(60) == 0
    return n
