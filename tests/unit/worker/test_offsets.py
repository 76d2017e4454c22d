"""The offset pipeline: offsets move only for durable batches, in order, and never past a loss."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from orderproc.config import ProcessingGuarantee, Settings
from orderproc.dlq.envelope import Failure
from orderproc.errors import BusinessRuleError, DeliveryError
from orderproc.kafka.clients import Unsent
from orderproc.models import Order, Source
from orderproc.worker.offsets import (
    BatchAborted,
    OffsetPipeline,
    PendingBatch,
    TransactionalOffsets,
)
from orderproc.worker.routing import FailureRouter

pytestmark = pytest.mark.unit


def pipeline(consumer: Any, producer: Any, **kwargs: Any) -> OffsetPipeline:
    router = FailureRouter(Settings(dlq_topic="dlq"), producer=producer)
    return OffsetPipeline(consumer, router, **kwargs)


def dead_failure() -> Failure:
    order = Order("o-1", "item1", 150.0)
    return Failure(BusinessRuleError("Simulated error: high price"), 3, 1, 2,
                   Source("orders", 0, 7, 1), "order-group", order, b"\x01", b"o-1")  # fmt: skip


def batch(
    offsets: dict[tuple[str, int], int], deliveries: int = 0, producer: Any = None
) -> PendingBatch:
    b = PendingBatch(next_offsets=dict(offsets))
    for _ in range(deliveries):
        producer.produce("dlq", value=b"x", on_delivery=b.expect_delivery())
    return b


def test_a_batch_without_routed_records_is_stored_at_once(
    fake_consumer: Any, fake_producer: Any
) -> None:
    offsets = pipeline(fake_consumer, fake_producer)

    offsets.submit(batch({("orders", 0): 11, ("orders", 1): 5}))

    assert sorted(fake_consumer.stored) == [("orders", 0, 11), ("orders", 1, 5)]
    assert len(offsets) == 0


def test_a_batch_waits_for_its_acknowledgements_and_later_batches_wait_behind_it(
    fake_consumer: Any, fake_producer: Any
) -> None:
    fake_producer.hold_reports = True
    offsets = pipeline(fake_consumer, fake_producer)
    first = batch({("orders", 0): 10}, deliveries=2, producer=fake_producer)
    offsets.submit(first)
    offsets.submit(batch({("orders", 0): 20}))

    assert fake_consumer.stored == []  # the first batch's DLQ records are not acknowledged yet
    assert len(offsets) == 2

    fake_producer.hold_reports = False
    offsets.advance()

    assert fake_consumer.stored == [("orders", 0, 10), ("orders", 0, 20)]  # in batch order


def test_a_refused_delivery_stores_neither_its_batch_nor_any_later_one(
    make_fake_producer: Any, fake_consumer: Any
) -> None:
    producer = make_fake_producer(fail_topics=("dlq",))
    producer.hold_reports = True
    offsets = pipeline(fake_consumer, producer)
    offsets.submit(batch({("orders", 0): 3}))
    offsets.submit(batch({("orders", 0): 10}, deliveries=1, producer=producer))
    offsets.submit(batch({("orders", 0): 20}))
    producer.hold_reports = False

    with pytest.raises(DeliveryError, match="Broker: refused"):
        offsets.advance()

    assert fake_consumer.stored == [("orders", 0, 3)]


def test_too_many_batches_in_flight_wait_for_every_acknowledgement(
    fake_consumer: Any, fake_producer: Any
) -> None:
    fake_producer.hold_reports = True
    offsets = pipeline(fake_consumer, fake_producer, max_in_flight=2)
    offsets.submit(batch({("orders", 0): 1}, deliveries=1, producer=fake_producer))
    offsets.submit(batch({("orders", 0): 2}, deliveries=1, producer=fake_producer))
    assert fake_consumer.stored == []

    fake_producer.hold_reports = False  # the third submit flushes the router
    offsets.submit(batch({("orders", 0): 3}, deliveries=1, producer=fake_producer))

    assert fake_consumer.stored == [("orders", 0, 1), ("orders", 0, 2), ("orders", 0, 3)]


def test_records_never_acknowledged_at_shutdown_stop_the_consumer(
    fake_consumer: Any, fake_producer: Any
) -> None:
    fake_producer.hold_reports = True
    offsets = pipeline(fake_consumer, fake_producer)
    offsets.submit(batch({("orders", 0): 9}, deliveries=1, producer=fake_producer))

    with pytest.raises(DeliveryError, match="1 retry/DLQ records unacknowledged"):
        offsets.advance(wait=True)

    assert fake_consumer.stored == []


def test_the_stored_callback_sees_each_durable_batch(
    fake_consumer: Any, fake_producer: Any
) -> None:
    seen: list[PendingBatch] = []
    offsets = pipeline(fake_consumer, fake_producer, on_stored=seen.append)
    b = batch({("orders", 0): 4})
    b.oldest_timestamp_ms = 123

    offsets.submit(b)

    assert seen == [b]


def test_commit_on_revoke_makes_handled_batches_durable_then_commits(
    fake_consumer: Any, fake_producer: Any
) -> None:
    fake_producer.hold_reports = True
    offsets = pipeline(fake_consumer, fake_producer)
    offsets.submit(batch({("orders", 0): 7}, deliveries=1, producer=fake_producer))
    fake_producer.hold_reports = False

    offsets.commit_on_revoke([])

    assert fake_consumer.stored == [("orders", 0, 7)]
    assert fake_consumer.commits == 1


def test_rewind_moves_the_fetch_position_back(fake_consumer: Any, fake_producer: Any) -> None:
    offsets = pipeline(fake_consumer, fake_producer)

    offsets.rewind("orders.retry.1", 2, 41)

    assert fake_consumer.seeks == [("orders.retry.1", 2, 41)]
    assert fake_consumer.stored == []  # a rewind is not a stored offset


def test_a_refused_record_replaced_in_time_does_not_fail_its_batch(
    fake_consumer: Any, make_fake_producer: Any
) -> None:
    producer = make_fake_producer(fail_topics=("dlq",))
    offsets = pipeline(fake_consumer, producer)
    b = PendingBatch(next_offsets={("orders", 0): 5})
    replaced: list[str] = []

    def on_refused(err: Any, refused: Any, expect: Any) -> None:
        replaced.append(f"{refused.topic()}: {err.str()}")
        producer.produce("dlq-small", value=b"x", on_delivery=expect())

    too_large = type("E", (), {"code": lambda s: 10, "str": lambda s: "Broker: too large"})()
    callback = b.expect_delivery(on_refused)
    offsets.submit(b)
    assert fake_consumer.stored == []  # still waiting for its record

    callback(too_large, Unsent("dlq", None, b"x"))  # the broker refused the record itself
    offsets.advance()

    assert replaced == ["dlq: Broker: too large"]
    assert fake_consumer.stored == [("orders", 0, 5)]


def test_an_authorization_failure_stops_the_consumer_instead_of_resending_the_record(
    make_fake_producer: Any, fake_consumer: Any
) -> None:
    # Not the record's fault (refuses_record is False): no reduced copy, no store, a stop.
    producer = make_fake_producer(
        fail_topics=("dlq",), fail_code=KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    offsets = pipeline(fake_consumer, producer)
    pending = PendingBatch(next_offsets={("orders", 0): 8})
    offsets.router.to_dlq(dead_failure(), [], now_ms=1, expect=pending.expect_delivery)

    with pytest.raises(DeliveryError, match="retry/DLQ deliveries failed, first: dlq: "):
        offsets.submit(pending)

    assert len(producer.produced) == 1
    assert fake_consumer.stored == []


class TxnProducer:
    """A transactional producer whose offsets commit fails ``failures`` times, fatally, or
    (``stuck``) does not return until the event is set."""

    def __init__(self, failures: int = 0, stuck: threading.Event | None = None) -> None:
        self.failures = failures
        self.stuck = stuck
        self.inits = 0
        self.commits = 0

    def init_transactions(self, timeout: float) -> None:
        self.inits += 1

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        if self.stuck is not None:
            self.stuck.wait()
        if self.failures:
            self.failures -= 1
            old_epoch = KafkaError(KafkaError._FENCED, "Producer attempted an operation with an "
                                   "old epoch", fatal=True)  # fmt: skip
            raise KafkaException(old_epoch)

    def commit_transaction(self, timeout: float) -> None:
        self.commits += 1

    def purge(self) -> None:
        """Nothing queued here."""

    def poll(self, timeout: float = 0) -> int:
        return 0


def transactional(consumer: Any, producers: list[TxnProducer], clock: Any) -> Any:
    made = iter(producers[1:])
    settings = Settings(dlq_topic="dlq", processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)
    router = FailureRouter(settings, producer=producers[0], make_producer=lambda: next(made))
    consumer.consumer_group_metadata = lambda: "group-metadata"
    return TransactionalOffsets(consumer, router, timeout_s=1.0, clock=clock)


def test_a_producer_ended_by_a_fatal_error_is_replaced_and_its_batch_read_again(
    fake_consumer: Any,
) -> None:
    # Kafka 4.4 answered a live instance "old epoch" (fatal) when its group coordinator
    # moved mid-transaction: a new producer, not a stopped consumer.
    first, second = TxnProducer(failures=1), TxnProducer()
    offsets = transactional(fake_consumer, [first, second], clock=lambda: 1000.0)

    with pytest.raises(BatchAborted):
        offsets.submit(batch({("orders", 0): 11}))
    offsets.submit(batch({("orders", 0): 11}))  # the batch, read again

    assert offsets.router.producer is second and offsets.producer is second
    assert (second.inits, second.commits) == (1, 1)  # fenced the old one, then committed
    assert first.commits == 0


def test_a_second_fatal_error_soon_after_stops_the_consumer(fake_consumer: Any) -> None:
    # Two live instances with one --instance-id fence each other: one of them stops.
    now = [1000.0]
    producers = [TxnProducer(failures=1), TxnProducer(failures=1), TxnProducer()]
    offsets = transactional(fake_consumer, producers, clock=lambda: now[0])
    with pytest.raises(BatchAborted):
        offsets.submit(batch({("orders", 0): 11}))
    now[0] += TransactionalOffsets.RENEWED_WITHIN_S - 1

    with pytest.raises(DeliveryError, match="another consumer running with this --instance-id"):
        offsets.submit(batch({("orders", 0): 11}))


def test_a_producer_stuck_in_send_offsets_past_its_timeout_is_replaced_and_its_batch_read_again(
    fake_consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # librdkafka #5456/#5511: the call can block past its timeout once the group
    # coordinator went away. The consumer must not stay in it: a new producer, the batch again.
    released = threading.Event()
    first, second = TxnProducer(stuck=released), TxnProducer()
    offsets = transactional(fake_consumer, [first, second], clock=lambda: 1000.0)
    offsets.timeout_s, offsets.STUCK_GRACE_S = 0.05, 0.05
    try:
        with pytest.raises(BatchAborted, match="did not return"):
            offsets.submit(batch({("orders", 0): 11}))
        offsets.submit(batch({("orders", 0): 11}))  # the batch, read again
    finally:
        released.set()  # the stuck call's thread ends

    assert offsets.router.producer is second and offsets.producer is second
    assert (second.inits, second.commits) == (1, 1)  # fenced the stuck one, then committed
    assert first.commits == 0
    assert "has not returned" in caplog.text and "librdkafka #5456" in caplog.text


def test_an_error_of_send_offsets_on_its_thread_is_raised_on_the_consumers(
    fake_consumer: Any,
) -> None:
    class Refusing(TxnProducer):
        def send_offsets_to_transaction(self, offsets: Any, metadata: Any, t: float) -> None:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))

    offsets = transactional(fake_consumer, [Refusing()], clock=lambda: 1000.0)
    with pytest.raises(DeliveryError, match="transaction failed: denied"):
        offsets.submit(batch({("orders", 0): 11}))
