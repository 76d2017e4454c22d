"""Queue mode: the group configs it sets, what it refuses, and what each record of a poll
becomes (acknowledged only once its outcome is durable)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from confluent_kafka import AcknowledgeType
from pydantic import ValidationError

from orderproc import headers as h
from orderproc.config import GroupType, ProcessingGuarantee, Settings, WireFormat
from orderproc.errors import DeliveryError, OrderProcError, StoreError
from orderproc.kafka.share_groups import CRASH_HEADROOM, share_group_configs
from orderproc.metrics import ConsumerMetrics
from orderproc.store.processed import ProcessedRow
from orderproc.worker import share_members
from orderproc.worker.handler import PriceThresholdHandler
from orderproc.worker.retry import RetryPolicy
from orderproc.worker.routing import FailureRouter
from orderproc.worker.share import ShareOrderConsumer
from orderproc.worker.sink import Written
from tests.unit.worker.records import BROKEN, SERDE, Acquired, order


@pytest.mark.parametrize(("attempts", "limit"), [(1, 3), (3, 5), (8, 10), (10, 10)])
def test_the_delivery_limit_leaves_room_for_crashed_members(attempts: int, limit: int) -> None:
    configs = share_group_configs(Settings(max_attempts=attempts), 0.0)
    assert configs["share.delivery.count.limit"] == str(limit)
    assert limit >= attempts and (limit == 10 or limit == attempts + CRASH_HEADROOM)
    # Orders written before the group's first member, never a replay's aborted attempt.
    assert configs["share.auto.offset.reset"] == "earliest"
    assert configs["share.isolation.level"] == "read_committed"


def test_more_attempts_than_a_share_group_delivers_is_refused() -> None:
    with pytest.raises(OrderProcError, match="MAX_ATTEMPTS=11 is more deliveries"):
        share_group_configs(Settings(max_attempts=11), 0.0)


@pytest.mark.parametrize(
    ("settings", "lock_ms"),
    [
        ({}, 30000),  # backoffs of 2.2 s at most: the broker's default lock
        ({"max_attempts": 6, "backoff_jitter": 0.0}, 31000),  # 1, 2, 4, 8, 16 s: 16 + 15
        ({"max_attempts": 10}, 45000),  # capped at backoff_max_s (30 s) + 15
        ({"max_attempts": 1}, 30000),  # no retry, no backoff
    ],
)
def test_the_record_lock_outlasts_the_longest_backoff(
    settings: dict[str, Any], lock_ms: int
) -> None:
    policy = RetryPolicy.from_settings(Settings(**settings))
    configs = share_group_configs(Settings(**settings), policy.longest_delay())
    assert configs["share.record.lock.duration.ms"] == str(lock_ms)


def test_a_backoff_longer_than_the_broker_lets_a_record_be_locked_is_refused() -> None:
    settings = Settings(max_attempts=8, backoff_max_s=50.0)
    with pytest.raises(OrderProcError, match=r"longest backoff \(50s\) must stay under 45s"):
        share_group_configs(settings, RetryPolicy.from_settings(settings).longest_delay())


def test_a_share_group_refuses_exactly_once_and_the_registry() -> None:
    share = GroupType.SHARE
    with pytest.raises(ValidationError, match="exactly once needs ORDERPROC_GROUP_TYPE"):
        Settings(group_type=share, processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)
    with pytest.raises(ValidationError, match="schemaless wire format only"):
        Settings(group_type=share, schema_registry_url="http://127.0.0.1:8081")
    with pytest.raises(ValidationError, match="schemaless wire format only"):
        Settings(group_type=share, schema_registry_url="http://r", wire_format=WireFormat.REGISTRY)
    # A registry URL with the schemaless format named is fine, as is the default group type.
    Settings(group_type=share, schema_registry_url="http://r", wire_format=WireFormat.SCHEMALESS)
    Settings(processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)


class FakeShareConsumer:
    """Records the acknowledgements a queue-mode member makes and when it sends them."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.acks: list[tuple[int, str]] = []  # (offset, ACCEPT|RELEASE) in order
        self.commits: list[int] = []  # how many acknowledgements each commit_sync sent

    def set_acknowledgement_commit_callback(self, _callback: Any) -> None:
        pass

    def acknowledge(self, msg: Acquired, kind: AcknowledgeType) -> None:
        self.acks.append((msg.offset(), "ACCEPT" if kind == AcknowledgeType.ACCEPT else "RELEASE"))

    def commit_sync(self, _timeout: float | None = None) -> None:
        self.commits.append(len(self.acks))


class FakeSink:
    """Stores every row it is given, or fails like a database that stays down."""

    def __init__(self, fail: bool = False) -> None:
        self.stored: list[str] = []
        self.fail = fail

    def write(self, rows: list[ProcessedRow], _records: list[Any]) -> Written:
        if self.fail:
            raise StoreError("the database is down and a stop was requested")
        self.stored += [row.order_id for row in rows]
        return Written(processed=len(rows))


class NoOrders:
    def price_totals(self) -> dict[str, tuple[int, float]]:
        return {}


def queue_consumer(
    monkeypatch: pytest.MonkeyPatch, producer: Any, sink: FakeSink
) -> tuple[ShareOrderConsumer, FakeShareConsumer]:
    monkeypatch.setattr(share_members, "ShareConsumer", FakeShareConsumer)
    settings = Settings(group_type=GroupType.SHARE, max_attempts=3, backoff_initial_s=0,
                        backoff_jitter=0, share_members=4)  # fmt: skip
    consumer = ShareOrderConsumer(
        settings, cast(Any, NoOrders()), handler=PriceThresholdHandler(100.0),
        metrics=ConsumerMetrics(retry_topics=[]), router=FailureRouter(settings, producer=producer),
        echo=None, serde=SERDE,
    )  # fmt: skip
    consumer.sink = cast(Any, sink)
    return consumer, cast(FakeShareConsumer, consumer.members.all[0].consumer)


def test_each_record_is_accepted_after_its_outcome_is_durable_and_a_retry_released(
    monkeypatch: pytest.MonkeyPatch, fake_producer: Any
) -> None:
    sink = FakeSink()
    consumer, client = queue_consumer(monkeypatch, fake_producer, sink)

    holder = consumer.members.all[0]
    consumer._handle(holder, cast(Any, [
        Acquired(1, order("o-1")),
        Acquired(2, order("o-2", price=150.0), delivery=1),  # fails: released, tried again
        Acquired(3, order("o-3", price=150.0), delivery=3),  # its last delivery: DLQ
        Acquired(4, BROKEN),  # permanent: DLQ at once
        Acquired(5, order("o-5"), headers=[(h.REPLAY_ID, b"replay-1")]),  # a replayed order
    ]))  # fmt: skip

    assert sink.stored == ["o-1", "o-5"]
    replayed = consumer.metrics.registry.get_sample_value(
        "orderproc_replayed_orders_total", {"outcome": "processed"}
    )
    assert replayed == 1
    letters = [json.loads(p["value"]) for p in fake_producer.produced]
    assert [p["topic"] for p in fake_producer.produced] == ["orders_dlq", "orders_dlq"]
    assert [letter["delivery_count"] for letter in letters] == [3, 1]
    # Accepted once stored or dead-lettered, and sent at once: the failing record is held
    # back through its backoff, and the member polls nothing until it is released.
    assert client.acks == [(1, "ACCEPT"), (3, "ACCEPT"), (4, "ACCEPT"), (5, "ACCEPT")]
    assert client.commits == [4]
    assert [m.offset() for m in holder.held] == [2]
    assert consumer.members.free() is not holder

    consumer.members.release_due()  # its backoff (0 s here) is over

    assert client.acks[-1] == (2, "RELEASE") and client.commits == [4, 5]
    assert not holder.held
    stats = consumer.stats
    assert (stats.consumed, stats.processed, stats.retried, stats.dead_lettered) == (4, 2, 1, 2)


def test_a_refusing_dlq_releases_the_whole_poll_and_accepts_nothing(
    monkeypatch: pytest.MonkeyPatch, make_fake_producer: Any
) -> None:
    sink = FakeSink()
    consumer, client = queue_consumer(
        monkeypatch, make_fake_producer(fail_topics=("orders_dlq",)), sink
    )

    holder = consumer.members.all[0]
    with pytest.raises(DeliveryError, match="dead letters refused"):
        consumer._handle(holder, cast(Any, [Acquired(1, order("o-1")), Acquired(2, BROKEN)]))

    assert client.acks == [(1, "RELEASE"), (2, "RELEASE")]
    assert client.commits == [2]


def test_a_store_that_stays_down_releases_the_whole_poll(
    monkeypatch: pytest.MonkeyPatch, fake_producer: Any
) -> None:
    consumer, client = queue_consumer(monkeypatch, fake_producer, FakeSink(fail=True))

    holder = consumer.members.all[0]
    with pytest.raises(StoreError):
        consumer._handle(holder, cast(Any, [Acquired(1, order("o-1")), Acquired(2, order("o-2"))]))

    assert client.acks == [(1, "RELEASE"), (2, "RELEASE")]
    assert consumer.stats.consumed == 0


def test_members_holding_records_back_are_skipped_and_the_free_ones_polled_in_turn(
    monkeypatch: pytest.MonkeyPatch, fake_producer: Any
) -> None:
    consumer, _ = queue_consumer(monkeypatch, fake_producer, FakeSink())
    members = consumer.members
    first, second, third, fourth = members.all

    members.hold(second, [(30.0, cast(Any, Acquired(7, order("o-7", price=150.0))))])

    assert [members.free() for _ in range(4)] == [first, third, fourth, first]
    assert 29.0 < members.until_due() <= 30.0
    assert members.held == 1
    for member in (first, third, fourth):
        members.hold(member, [(60.0, cast(Any, Acquired(8, order("o-8"))))])
    assert members.free() is None  # every member serves a backoff: the process waits
    members.release_due(all_now=True)  # a stop: released early, none kept
    assert members.held == 0 and members.free() is not None
