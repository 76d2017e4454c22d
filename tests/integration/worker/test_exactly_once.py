"""Exactly-once mode on the real broker: retry/DLQ records and offsets commit together, a
read_committed reader sees each failure once, and an aborted batch is read again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from orderproc.config import ProcessingGuarantee, Settings
from orderproc.kafka.clients import transactional_producer_config
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import open_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.worker.consumer import OrderConsumer
from tests.support import read_committed

pytestmark = pytest.mark.integration

SERDE = SchemalessSerde()


@pytest.fixture
def eos_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        partitions=2,
        processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE,
        instance_id="eos-test",
        max_attempts=2,
        backoff_initial_s=0.2,
    )


def run_consumer(settings: Settings, **kwargs: Any) -> Any:
    with open_engine(settings.effective_database_url) as engine:
        upgrade(engine)
        consumer = OrderConsumer(settings, OrderRepository(engine), echo=None, **kwargs)
        stats = consumer.run(idle_exit_s=3)
        return stats, OrderRepository(engine).processed_ids()


def test_exactly_once_processes_retries_and_dead_letters_with_committed_offsets(
    eos_settings: Settings, make_producer: Callable[..., Any]
) -> None:
    producer = make_producer()
    orders = [Order(f"o-{i}", "item1", 150.0 if i % 4 == 0 else 20.0) for i in range(40)]
    for order in orders:
        producer.produce(eos_settings.orders_topic, key=order.order_id.encode(),
                         value=SERDE.encode(order))  # fmt: skip
    assert producer.flush(30) == 0

    stats, processed = run_consumer(eos_settings)

    assert processed == {o.order_id for o in orders if o.price < 100}
    dead = read_committed(eos_settings.bootstrap_servers, eos_settings.dlq_topic)
    assert sorted(json.loads(m.value())["failed_order"]["orderId"] for m in dead) == sorted(
        o.order_id for o in orders if o.price > 100
    )
    retried = read_committed(eos_settings.bootstrap_servers, eos_settings.retry_topic(1))
    assert len(retried) == 10
    group = Consumer({"bootstrap.servers": eos_settings.bootstrap_servers,
                      "group.id": eos_settings.consumer_group})  # fmt: skip
    try:
        tps = [TopicPartition(eos_settings.orders_topic, p) for p in (0, 1)]
        committed = sum(tp.offset for tp in group.committed(tps, timeout=10))
    finally:
        group.close()
    assert committed == 40  # the offsets moved with the transactions
    assert (stats.processed, stats.dead_lettered) == (30, 10)


def test_a_restarted_instance_fences_its_predecessor_and_nothing_is_seen_twice(
    eos_settings: Settings, make_producer: Callable[..., Any]
) -> None:

    # A predecessor with the same transactional id wrote dead letters and died before
    # committing: its transaction is open on the broker.
    zombie = Producer(transactional_producer_config(eos_settings))
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(eos_settings.dlq_topic, value=b'{"reason": "never committed"}')
    zombie.flush(30)
    producer = make_producer()
    producer.produce(eos_settings.orders_topic, value=SERDE.encode(Order("dear", "i", 150.0)))
    assert producer.flush(30) == 0

    run_consumer(eos_settings)  # init_transactions fences the zombie; its record is aborted

    dead = read_committed(eos_settings.bootstrap_servers, eos_settings.dlq_topic)
    assert [json.loads(m.value())["failed_order"]["orderId"] for m in dead] == ["dear"]


KILLER = """
import os, signal, sys
from orderproc.config import Settings
from orderproc.store.engine import open_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.worker.consumer import OrderConsumer

point, batch = sys.argv[1], int(sys.argv[2])
seen = {"n": 0}

def crash(at: str) -> None:
    if at == point:
        seen["n"] += 1
        if seen["n"] == batch:
            os.kill(os.getpid(), signal.SIGKILL)

settings = Settings()
with open_engine(settings.effective_database_url) as engine:
    upgrade(engine)
    OrderConsumer(settings, OrderRepository(engine), echo=None, crash=crash).run(idle_exit_s=5)
"""


@pytest.mark.parametrize(
    "point",
    [
        "handled",  # decided and routed inside the open transaction; nothing in the store
        "stored",  # the batch's rows are committed to the store; the transaction is not
        "committed",  # the transaction (records and offsets) committed
    ],
)
def test_each_failure_window_leaves_every_order_once(
    point: str,
    make_settings: Callable[..., Settings],
    pg_url: str,
    make_producer: Callable[..., Any],
    settings_env: Callable[[Settings], dict[str, str]],
) -> None:
    import subprocess
    import sys

    settings = make_settings(
        database_url=pg_url,
        processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE,
        instance_id="windows",
        batch_size=20,
        max_attempts=2,
        backoff_initial_s=0.1,
        session_timeout_ms=6000,  # the dead member leaves the group quickly
    )
    producer = make_producer()
    orders = [Order(f"o-{i}", "item1", 150.0 if i % 3 == 0 else 20.0) for i in range(60)]
    for order in orders:
        producer.produce(settings.orders_topic, value=SERDE.encode(order))
    assert producer.flush(30) == 0

    killed = subprocess.run([sys.executable, "-c", KILLER, point, "2"],
                            env=settings_env(settings), capture_output=True, text=True,
                            timeout=180, check=False)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    _stats, processed = run_consumer(settings)  # the restarted instance fences the dead one

    assert processed == {o.order_id for o in orders if o.price < 100}
    dead = read_committed(settings.bootstrap_servers, settings.dlq_topic)
    ids = [json.loads(m.value())["failed_order"]["orderId"] for m in dead]
    assert sorted(ids) == sorted(o.order_id for o in orders if o.price > 100)  # each once
    retried = read_committed(settings.bootstrap_servers, settings.retry_topic(1))
    assert len(retried) == len(ids)  # one retry record per failing order: none twice
