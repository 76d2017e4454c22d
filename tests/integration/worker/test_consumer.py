"""The live consumer against the real broker and database."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from sqlalchemy import text

from orderproc.config import RetryMode, Settings
from orderproc.errors import DeliveryError
from orderproc.metrics import ConsumerMetrics
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.worker.consumer import OrderConsumer

pytestmark = pytest.mark.integration

SERDE = SchemalessSerde()
ReadTopic = Callable[..., list[Message]]
HeadersOf = Callable[[Message], dict[str, str]]


def produce(
    producer: Producer, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    for key, value in records:
        producer.produce(topic, key=key, value=value, headers=[("trace-id", b"abc")])
    assert producer.flush(30) == 0


def orders(*prices: float, prefix: str = "o") -> list[Order]:
    return [Order(f"{prefix}-{i}", f"item{i % 5 + 1}", p) for i, p in enumerate(prices)]


def encoded(items: list[Order]) -> list[tuple[bytes | None, bytes | None]]:
    return [(o.order_id.encode(), SERDE.encode(o)) for o in items]


def make_order_consumer(
    settings: Settings, lines: list[str] | None = None, **kw: Any
) -> OrderConsumer:
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return OrderConsumer(
        settings, OrderRepository(engine), echo=(lines.append if lines is not None else None), **kw
    )


def committed(settings: Settings, topic: str, partitions: int = 1) -> list[int]:
    probe = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.consumer_group}
    )
    try:
        tps = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        probe.close()


def test_orders_at_or_below_threshold_are_processed_and_recorded_once(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer]
) -> None:
    settings = make_settings()
    items = orders(10.0, 99.99, 100.0, 45.67)
    produce(
        make_producer(), settings.orders_topic, encoded(items) + encoded(items[:2])
    )  # 2 redelivered
    lines: list[str] = []

    stats = make_order_consumer(settings, lines).run(idle_exit_s=3)

    repo = OrderRepository(make_engine(settings.effective_database_url))
    assert repo.processed_ids() == {o.order_id for o in items}
    assert repo.count() == 4
    assert (stats.processed, stats.duplicates, stats.dead_lettered) == (4, 2, 0)
    assert stats.average_price == pytest.approx((10.0 + 99.99 + 100.0 + 45.67) / 4)
    # The average is of the prices as Avro float32 carries them (99.98999786..., 45.66999816...),
    # as the original consumer computed it; only the line rounds.
    assert "Processed o-3 | price=45.67 | avg=63.91" in lines
    assert committed(settings, settings.orders_topic) == [6]


@pytest.mark.parametrize("mode", [RetryMode.NON_BLOCKING, RetryMode.BLOCKING])
def test_expensive_orders_are_retried_then_dead_lettered_with_full_envelope(
    mode: RetryMode,
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    read_all: ReadTopic,
    headers_of: HeadersOf,
) -> None:
    settings = make_settings(retry_mode=mode, max_attempts=3, backoff_initial_s=0.3)
    [order] = orders(120.5, prefix=f"exp-{mode.value}")
    produce(make_producer(), settings.orders_topic, encoded([order]))
    lines: list[str] = []

    stats = make_order_consumer(settings, lines).run(idle_exit_s=3)

    assert stats.dead_lettered == 1 and stats.processed == 0
    assert stats.retried == 2
    assert [line for line in lines if line.startswith("Attempt")] == [
        "Attempt 1/3 failed: Simulated error: high price",
        "Attempt 2/3 failed: Simulated error: high price",
    ]
    assert f"DLQ: {order.order_id} -> Simulated error: high price" in lines
    [msg] = read_all(settings.dlq_topic)
    envelope = json.loads(msg.value())
    assert envelope["failed_order"] == {
        "orderId": order.order_id,
        "product": order.product,
        "price": 120.5,
    }
    assert envelope["reason"] == "Simulated error: high price"
    assert envelope["error"] == {
        "class": "BusinessRuleError",
        "message": "Simulated error: high price",
        "category": "business_rule",
        "retryable": True,
    }
    assert envelope["attempts"] == 3
    assert envelope["source"]["topic"] == settings.orders_topic
    assert envelope["source"]["offset"] == 0
    assert envelope["consumer_group"] == settings.consumer_group
    assert envelope["raw_value_b64"] is None
    assert envelope["first_failure_at"] < envelope["last_failure_at"]
    assert msg.key() == order.order_id.encode()
    headers = dict(msg.headers())
    assert headers["trace-id"] == b"abc"  # the original headers travel along
    assert headers["orderproc.attempts"] == b"3"
    assert headers["orderproc.error.category"] == b"business_rule"
    assert headers["orderproc.source.topic"] == settings.orders_topic.encode()
    names = [k for k, _ in msg.headers()]
    assert len(names) == len(set(names)), (
        "provenance headers are replaced across hops, not appended"
    )
    # Backoff is exponential (0.3 s, then 0.6 s), read from the times the consumer wrote.
    if mode is RetryMode.NON_BLOCKING:
        hops = [headers_of(m) for topic in settings.retry_topics for m in read_all(topic)]
        assert [h["orderproc.attempts"] for h in hops] == ["1", "2"]
        due = [int(h["orderproc.retry.due.ms"]) for h in hops]
        failed = [int(h["orderproc.last.failure.ms"]) for h in hops]
        assert [d - f for d, f in zip(due, failed, strict=True)] == [300, 600]
        # Each attempt after a retry hop came no earlier than that hop was due.
        failed.append(int(headers_of(msg)["orderproc.last.failure.ms"]))
        assert failed[1] >= due[0] and failed[2] >= due[1]
    else:
        # Retried in place: the consumer's own failure times span both backoffs.
        first = datetime.fromisoformat(envelope["first_failure_at"])
        last = datetime.fromisoformat(envelope["last_failure_at"])
        assert last - first >= timedelta(seconds=0.3 + 0.6)


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("garbage", b"\xff\xfe not avro at all \x00\x01"),
        ("truncated", SERDE.encode(Order("t-1", "item1", 5.0))[:-2]),
        ("empty", b""),
        ("null", None),
        ("trailing", SERDE.encode(Order("t-2", "item1", 5.0)) + b"\x00"),
    ],
)
def test_undecodable_values_go_to_dlq_with_raw_bytes(
    label: str,
    value: bytes | None,
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    read_all: ReadTopic,
) -> None:
    settings = make_settings()
    good = orders(20.0, prefix=label)
    produce(make_producer(), settings.orders_topic, [(b"bad", value), *encoded(good)])

    stats = make_order_consumer(settings).run(idle_exit_s=2)

    assert stats.dead_lettered_by_category == {"deserialization": 1}
    assert stats.processed == 1 and stats.retried == 0  # permanent: no retry, consumer kept going
    [msg] = read_all(settings.dlq_topic)
    envelope = json.loads(msg.value())
    assert envelope["failed_order"] is None
    assert envelope["error"]["retryable"] is False
    assert envelope["attempts"] == 1
    if value is None:  # a tombstone has no bytes to keep
        assert envelope["raw_value_b64"] is None and msg.value() is not None
    else:
        assert base64.b64decode(envelope["raw_value_b64"]) == value
    assert msg.key() == b"bad"


@pytest.mark.parametrize(
    ("record", "reason_part"),
    [
        ({"orderId": "", "product": "item1", "price": 5.0}, "orderId is empty"),
        ({"orderId": "n-1", "product": "item1", "price": float("nan")}, "not finite"),
        ({"orderId": "n-2", "product": "item1", "price": float("inf")}, "not finite"),
        ({"orderId": "n-3", "product": "item1", "price": -1.0}, "negative"),
        ({"orderId": "n-4", "product": "", "price": 1.0}, "product is empty"),
    ],
)
def test_invalid_orders_are_dead_lettered_at_once(
    record: dict[str, Any],
    reason_part: str,
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    read_all: ReadTopic,
) -> None:
    settings = make_settings()
    raw = SERDE.encode_record(record)
    produce(make_producer(), settings.orders_topic, [(b"k", raw)])

    stats = make_order_consumer(settings).run(idle_exit_s=2)

    assert stats.dead_lettered_by_category == {"validation": 1}
    [msg] = read_all(settings.dlq_topic)
    envelope = json.loads(msg.value())
    assert reason_part in envelope["reason"]
    assert envelope["error"]["category"] == "validation"
    assert base64.b64decode(envelope["raw_value_b64"]) == raw


def test_non_blocking_retry_does_not_delay_orders_behind_a_failure(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer]
) -> None:
    # A long backoff: in blocking mode the cheap orders would wait 30 s behind the first one.
    settings = make_settings(max_attempts=2, backoff_initial_s=30, backoff_max_s=30)
    items = orders(140.0, 11.0, 12.0, 13.0, prefix="nb")
    produce(make_producer(), settings.orders_topic, encoded(items))
    lines: list[str] = []
    consumer = make_order_consumer(settings, lines)

    # Four records: the expensive one is moved to the retry topic, the rest are processed.
    stats = consumer.run(max_messages=4)

    assert stats.processed == 3 and stats.retried == 1 and stats.dead_lettered == 0
    assert [line.split(" |")[0] for line in lines if line.startswith("Processed")] == [
        "Processed nb-1",
        "Processed nb-2",
        "Processed nb-3",
    ]
    assert committed(settings, settings.orders_topic) == [4]  # the main topic moved past it


@dataclass(frozen=True)
class PauseChange:
    """What the consumer had done when its number of paused partitions changed."""

    paused: int
    retried: int
    dead_lettered: int


class PauseProbe:
    """Stands in for the paused-partitions gauge and records each change with the consumer's
    counts at that moment; the consumer calls it on its own thread, so no sleep or lock."""

    def __init__(self, metrics: ConsumerMetrics) -> None:
        self.gauge = metrics.paused_partitions
        self.changes: list[PauseChange] = []
        self.consumer: OrderConsumer | None = None
        metrics.paused_partitions = self

    def set(self, value: float) -> None:
        self.gauge.set(value)
        assert self.consumer is not None
        stats = self.consumer.stats
        self.changes.append(PauseChange(int(value), stats.retried, stats.dead_lettered))


def test_retry_partition_is_paused_until_due(
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    read_all: ReadTopic,
    headers_of: HeadersOf,
) -> None:
    # A backoff long enough for the consumer to read the retry record well before it is due.
    settings = make_settings(max_attempts=2, backoff_initial_s=3.0)
    produce(make_producer(), settings.orders_topic, encoded(orders(150.0, 5.0, prefix="due")))
    metrics = ConsumerMetrics()
    probe = PauseProbe(metrics)
    consumer = probe.consumer = make_order_consumer(settings, metrics=metrics)

    stats = consumer.run(idle_exit_s=1)

    # The retry partition was paused while its record waited: failed once, not yet retried.
    paused = [c for c in probe.changes if c.paused]
    assert paused, "the retry partition was never paused"
    assert set(paused) == {PauseChange(paused=1, retried=1, dead_lettered=0)}
    # ...and resumed when it was due: the second attempt failed no earlier than the due time
    # the first attempt wrote on the retry record (both times written by the consumer).
    last_pause = len(probe.changes) - 1 - probe.changes[::-1].index(paused[-1])
    assert probe.changes[last_pause + 1].paused == 0
    [retry] = read_all(settings.retry_topic(1))
    [dead] = read_all(settings.dlq_topic)
    due_ms = int(headers_of(retry)["orderproc.retry.due.ms"])
    assert int(headers_of(dead)["orderproc.last.failure.ms"]) >= due_ms
    assert int(headers_of(dead)["orderproc.attempts"]) == 2
    assert stats.retried == 1 and stats.dead_lettered == 1 and stats.processed == 1


def test_dlq_that_cannot_be_written_stops_consumer_with_nothing_committed(
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    topic_factory: Callable[..., str],
) -> None:
    settings = make_settings(max_attempts=1, create=True)
    # A DLQ topic that refuses every record: its size limit is below any envelope.
    tiny_dlq = topic_factory("tinydlq", config={"max.message.bytes": "64"})
    settings = settings.model_copy(update={"dlq_topic": tiny_dlq})
    produce(make_producer(), settings.orders_topic, [(b"x", b"\x00garbage")])
    consumer = make_order_consumer(settings)

    with pytest.raises(DeliveryError, match="deliveries failed"):
        consumer.run(idle_exit_s=5)

    assert committed(settings, settings.orders_topic) == [
        -1001
    ]  # OFFSET_INVALID: nothing committed
    assert not consumer.health.status()[0]


def test_flood_breaker_trips_and_pauses_instead_of_dead_lettering_everything(
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    read_all: ReadTopic,
) -> None:
    settings = make_settings(flood_window=10, flood_ratio=0.5, flood_cooldown_s=3600)
    produce(make_producer(), settings.orders_topic, [(b"g", b"\xffbroken") for _ in range(30)])
    consumer = make_order_consumer(settings)

    stats = consumer.run(idle_exit_s=2)

    assert stats.flood_breaker_trips == 1
    assert stats.dead_lettered == 10  # the window that tripped it, and no more
    assert consumer.metrics.flood_open._value.get() == 1
    assert committed(settings, settings.orders_topic) == [10]
    assert len(read_all(settings.dlq_topic)) == 10  # the whole DLQ, to its end offset


def test_flood_breaker_does_not_trip_on_the_original_workload(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer]
) -> None:
    import random

    from orderproc.worker.producer import OrderGenerator

    settings = make_settings(max_attempts=1)  # no retries: each failure is a dead letter at once
    gen = iter(OrderGenerator(rng=random.Random(7)))
    items = [next(gen) for _ in range(600)]
    produce(make_producer(), settings.orders_topic, encoded(items))

    stats = make_order_consumer(settings).run(idle_exit_s=2)

    expected_failures = sum(1 for o in items if o.price > 100)
    assert stats.flood_breaker_trips == 0
    assert stats.dead_lettered == expected_failures > 150
    assert stats.processed == 600 - expected_failures


def test_persists_to_postgresql(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer], pg_url: str
) -> None:
    settings = make_settings(database_url=pg_url, partitions=3)
    items = orders(*[float(i) for i in range(1, 101)], prefix="pg")
    produce(make_producer(), settings.orders_topic, encoded(items))

    stats = make_order_consumer(settings).run(idle_exit_s=3)

    assert stats.processed == 100
    repo = OrderRepository(make_engine(pg_url))
    assert repo.processed_ids() == {o.order_id for o in items}
    assert sum(committed(settings, settings.orders_topic, 3)) == 100


def test_two_instances_share_the_partitions_and_lose_nothing(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer]
) -> None:
    import random
    import threading

    from orderproc.worker.producer import OrderGenerator

    settings = make_settings(partitions=4, max_attempts=1, batch_size=50, session_timeout_ms=6000)
    gen = iter(OrderGenerator(fail_share=0.1, rng=random.Random(5)))
    items = [next(gen) for _ in range(2000)]
    first, second = make_order_consumer(settings), make_order_consumer(settings)
    results: dict[str, Any] = {}

    def run(name: str, consumer: OrderConsumer) -> None:
        results[name] = consumer.run(idle_exit_s=15)

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 12
    # Wait (bounded) until the group has settled with two partitions each.
    while time.monotonic() < deadline:
        owned = [len(c.partitions) for c in (first, second)]
        if owned == [2, 2]:
            break
        time.sleep(0.1)
    produce(make_producer(), settings.orders_topic, encoded(items))
    for thread in threads:
        thread.join(180)

    cheap = {o.order_id for o in items if o.price <= settings.price_threshold}
    repo = OrderRepository(make_engine(settings.effective_database_url))
    assert repo.processed_ids() == cheap
    assert results["a"].processed + results["b"].processed == len(cheap)
    assert results["a"].consumed > 0 and results["b"].consumed > 0  # both got partitions
    assert sum(committed(settings, settings.orders_topic, 4)) == 2000


def test_a_replayed_copy_already_processed_is_ignored(
    make_settings: Callable[..., Settings], kcat: Callable[..., None]
) -> None:
    # Two copies of one replayed (corrected) order, written by kcat with the replay's
    # lineage headers as a replay that published twice would leave them.
    settings = make_settings()
    lineage = (
        (b"replay.id", b"manual__2026-11-27"),
        (b"replay.count", b"1"),
        (b"replay.dlq.topic", b"orders_dlq"),
        (b"replay.dlq.partition", b"0"),
        (b"replay.dlq.offset", b"41"),
    )
    corrected = SERDE.encode(Order("o-replayed", "item1", 80.0))
    for _ in range(2):
        kcat(settings, corrected, key=b"o-replayed", headers=lineage)

    stats = make_order_consumer(settings).run(idle_exit_s=3)

    assert (stats.processed, stats.duplicates, stats.dead_lettered) == (1, 1, 0)
    with make_engine(settings.effective_database_url).connect() as conn:
        rows = conn.execute(text("SELECT order_id, price, replay_id FROM processed_orders")).all()
    assert [tuple(r) for r in rows] == [("o-replayed", 80.0, "manual__2026-11-27")]
    assert committed(settings, settings.orders_topic) == [2]
