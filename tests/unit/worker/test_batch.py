"""The batch handler carries out each record's outcome once: a row for the store, a record
routed to a retry topic or the DLQ, or a held partition; the batch's offsets and per-topic
counts say exactly what was handled, and the flood breaker sees main-topic records in order."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from orderproc import headers as h
from orderproc.clock import now_ms
from orderproc.config import RetryMode, Settings
from orderproc.headers import Header
from orderproc.metrics import ConsumerMetrics
from orderproc.store.processed import ProcessedRow
from orderproc.worker.batch import BatchHandler
from orderproc.worker.breaker import FloodBreaker, FloodGuard
from orderproc.worker.decide import Decider
from orderproc.worker.handler import PriceThresholdHandler
from orderproc.worker.holds import PartitionHolds
from orderproc.worker.offsets import OffsetPipeline
from orderproc.worker.outcomes import ConsumerStats
from orderproc.worker.routing import FailureRouter
from tests.unit.worker.records import BROKEN, SERDE, Consumed, order

pytestmark = pytest.mark.unit


def retried(source_offset: int, due_ms: int) -> list[Header]:
    """A retry-topic record's headers: one attempt made on ``orders[2]@source_offset``."""
    return [
        (h.ATTEMPTS, b"1"),
        (h.SOURCE_TOPIC, b"orders"),
        (h.SOURCE_PARTITION, b"2"),
        (h.SOURCE_OFFSET, h.number(source_offset)),
        (h.RETRY_DUE_MS, h.number(due_ms)),
    ]


def handler(
    consumer: Any, producer: Any, settings: Settings | None = None, window: int = 200
) -> tuple[BatchHandler, ConsumerStats, FloodBreaker]:
    settings = settings or Settings()
    router = FailureRouter(settings, producer=producer)
    holds = PartitionHolds(consumer, OffsetPipeline(consumer, router), lambda _paused: None)
    metrics = ConsumerMetrics(retry_topics=settings.retry_topics)
    breaker = FloodBreaker(window, 0.5, cooldown_s=300.0)
    decider = Decider.from_settings(settings, PriceThresholdHandler(100.0), serde=SERDE)
    stats = ConsumerStats()
    batches = BatchHandler(settings, decider, router, holds, FloodGuard(breaker, metrics),
                           consumer, stats, metrics, echo=None)  # fmt: skip
    return batches, stats, breaker


def test_a_mixed_batch_is_stored_routed_and_held_record_by_record(
    fake_consumer: Any, fake_producer: Any
) -> None:
    batches, stats, _ = handler(fake_consumer, fake_producer)
    later = now_ms() + 20_000  # a retry due in 20 s (a backoff could have set it)

    batch = batches.handle([
        Consumed("orders", 0, 10, order("o-1")),
        Consumed("orders", 0, 11, order("o-2", price=150.0)),  # fails: to the retry topic
        Consumed("orders", 1, 20, BROKEN),  # to the DLQ
        Consumed("orders.retry.1", 0, 5, order("o-4"), retried(4, due_ms=later)),  # not due
        Consumed("orders.retry.1", 0, 6, order("o-5"), retried(5, due_ms=1)),  # behind it
        Consumed("orders.retry.1", 1, 3, order("o-6"), retried(7, due_ms=1)),  # due
        Consumed("orders", 0, 12, order("o-7")),
    ])  # fmt: skip

    assert batch.rows == [
        ProcessedRow("o-1", "item1", 10.0, 1, "orders", 0, 10, batch.now),
        ProcessedRow("o-6", "item1", 10.0, 2, "orders", 2, 7, batch.now),  # its first home
        ProcessedRow("o-7", "item1", 10.0, 1, "orders", 0, 12, batch.now),
    ]
    assert [r.coordinates for r in batch.records] == [
        "orders[0]@10", "orders.retry.1[1]@3", "orders[0]@12",
    ]  # fmt: skip
    assert [(p["topic"], p["key"]) for p in fake_producer.produced] == [
        ("orders.retry.1", b"k-orders-0-11"), ("orders_dlq", b"k-orders-1-20"),
    ]  # fmt: skip
    assert batch.pending == 2  # both wait for the broker before the offsets may move
    # The record not due holds its partition there; the one behind it waits with it.
    assert fake_consumer.paused == {("orders.retry.1", 0)}
    assert fake_consumer.seeks == [("orders.retry.1", 0, 5)]
    assert batch.next_offsets == {("orders", 0): 13, ("orders", 1): 21, ("orders.retry.1", 1): 4}
    assert batch.consumed == {"orders": 4, "orders.retry.1": 1}
    assert (stats.retried, stats.dead_lettered, stats.flood_breaker_trips) == (1, 1, 0)


def test_blocking_mode_holds_the_partition_at_a_failing_order_until_its_last_attempt(
    fake_consumer: Any, fake_producer: Any
) -> None:
    settings = Settings(retry_mode=RetryMode.BLOCKING, max_attempts=3)
    batches, stats, _ = handler(fake_consumer, fake_producer, settings)
    failing = Consumed("orders", 0, 2, order("o-2", price=150.0))

    first = batches.handle([
        Consumed("orders", 0, 1, order("o-1")),
        failing,
        Consumed("orders", 0, 3, order("o-3")),  # waits behind it
        Consumed("orders", 1, 8, order("o-8")),  # another partition goes on
    ])  # fmt: skip
    again = []
    for _ in range(2):  # the partition resumes and the same record is read again
        batches.holds.release(("orders", 0))
        again.append(batches.handle([failing, Consumed("orders", 0, 3, order("o-3"))]))

    assert [r.order_id for r in first.rows] == ["o-1", "o-8"]
    assert first.next_offsets == {("orders", 0): 2, ("orders", 1): 9}
    assert first.consumed == {"orders": 2}
    assert fake_consumer.seeks == [("orders", 0, 2)] * 2  # held at it after attempts 1 and 2
    assert again[0].rows == [] and again[0].next_offsets == {}
    # The third attempt was the last: dead-lettered, and the partition goes on behind it.
    [letter] = fake_producer.produced
    assert letter["topic"] == "orders_dlq"
    assert h.integer(letter["headers"], h.ATTEMPTS) == 3
    assert [r.order_id for r in again[1].rows] == ["o-3"]
    assert again[1].next_offsets == {("orders", 0): 4}
    assert again[1].consumed == {"orders": 2}
    assert (stats.retried, stats.dead_lettered) == (2, 1)
    assert fake_consumer.paused == set()


def test_the_flood_breaker_stops_the_batch_at_the_failure_that_trips_it_and_pauses_all(
    fake_consumer: Any, fake_producer: Any
) -> None:
    batches, stats, breaker = handler(fake_consumer, fake_producer, window=10)
    fake_consumer.assigned = [TopicPartition("orders", 0), TopicPartition("orders", 1),
                              TopicPartition("orders.retry.1", 0)]  # fmt: skip

    batch = batches.handle(
        [Consumed("orders", 0, n, BROKEN) for n in range(12)] + [Consumed("orders", 1, 0, BROKEN)]
    )

    assert breaker.is_open and batch.tripped and stats.flood_breaker_trips == 1
    assert len(fake_producer.produced) == 10  # the 10th failure filled the window: it tripped
    assert batch.next_offsets == {("orders", 0): 10}
    assert batch.consumed == {"orders": 10}
    # Rewound to the first record not handled, and every assigned partition paused.
    assert fake_consumer.seeks == [("orders", 0, 10), ("orders", 1, 0)]
    assert fake_consumer.paused == {("orders", 0), ("orders", 1), ("orders.retry.1", 0)}


def test_the_flood_breaker_sees_main_topic_successes_in_order_and_no_retry_topic_record(
    fake_consumer: Any, fake_producer: Any
) -> None:
    batches, stats, breaker = handler(fake_consumer, fake_producer, window=10)
    main = [  # one in five fails: far below the ratio when the successes count, in order
        Consumed("orders", 0, n, BROKEN if n % 5 == 0 else order(f"o-{n}")) for n in range(40)
    ]
    backlog = [  # a retry topic's backlog failing at once (a restart) is left out
        Consumed("orders.retry.1", 0, n, BROKEN, retried(n, due_ms=1)) for n in range(20)
    ]

    first, second = batches.handle(main), batches.handle(backlog)

    assert not breaker.is_open and stats.flood_breaker_trips == 0
    assert breaker.dead_share == 0.2  # the last 10 main-topic records: 2 failed
    assert (len(first.rows), stats.dead_lettered) == (32, 28)
    assert (first.consumed, second.consumed) == ({"orders": 40}, {"orders.retry.1": 20})
