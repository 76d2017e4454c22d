"""Routing: what a retry record and a dead letter carry, and a full producer queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from orderproc.config import Settings
from orderproc.dlq.envelope import Failure
from orderproc.errors import BusinessRuleError, DeliveryError, DeserializationError
from orderproc.models import Order, Source
from orderproc.worker.offsets import PendingBatch
from orderproc.worker.routing import FailureRouter

pytestmark = pytest.mark.unit

SOURCE = Source("orders", 2, 40, 1_700_000_000_000)
ORDER = Order("o-1", "item1", 150.0)


def failure(attempts: int = 1, *, order: Order | None = ORDER) -> Failure:
    error = (
        BusinessRuleError("Simulated error: high price")
        if order
        else DeserializationError("undecodable", b"\x01")
    )
    return Failure(
        error=error,
        attempts=attempts,
        first_failure_ms=1_700_000_001_000,
        last_failure_ms=1_700_000_002_000,
        source=SOURCE,
        consumer_group="order-group",
        order=order,
        raw_value=b"\x01raw",
        key=b"o-1",
    )


STALE = [
    ("orderproc.attempts", b"9"),
    ("orderproc.source.topic", b"elsewhere"),
    ("trace-id", b"abc"),
]


def test_a_retry_record_carries_the_original_bytes_fresh_provenance_and_its_due_time(
    fake_producer: Any,
) -> None:
    router = FailureRouter(Settings(), producer=fake_producer)

    router.to_retry(failure(2), "orders.retry.2", 1_700_000_005_000, STALE)

    [sent] = fake_producer.produced
    headers = sent["headers"]
    names = [k for k, _ in headers]
    assert sent["topic"] == "orders.retry.2"
    assert sent["key"] == b"o-1" and sent["value"] == b"\x01raw"
    assert ("trace-id", b"abc") in headers  # the record's own headers travel on
    assert names.count("orderproc.attempts") == 1  # replaced, not appended
    assert dict(headers)["orderproc.attempts"] == b"2"
    assert dict(headers)["orderproc.source.topic"] == b"orders"
    assert dict(headers)["orderproc.retry.due.ms"] == b"1700000005000"


def test_a_dead_letter_carries_the_envelope_and_the_original_key(fake_producer: Any) -> None:
    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=fake_producer)

    router.to_dlq(failure(3), STALE, now_ms=1_700_000_009_000)

    [sent] = fake_producer.produced
    envelope = json.loads(sent["value"])
    assert sent["topic"] == "orders_dlq"
    assert sent["key"] == b"o-1"
    assert envelope["failed_order"] == {"orderId": "o-1", "product": "item1", "price": 150.0}
    assert envelope["reason"] == "Simulated error: high price"
    assert envelope["attempts"] == 3
    assert envelope["source"] == {"topic": "orders", "partition": 2, "offset": 40,
                                  "timestamp": 1_700_000_000_000}  # fmt: skip
    assert "orderproc.retry.due.ms" not in dict(sent["headers"])


def test_an_undecodable_record_is_dead_lettered_with_its_raw_bytes(fake_producer: Any) -> None:
    router = FailureRouter(Settings(), producer=fake_producer)

    router.to_dlq(failure(order=None), [], now_ms=1)

    envelope = json.loads(fake_producer.produced[0]["value"])
    assert envelope["failed_order"] is None
    assert envelope["raw_value_b64"] == "AXJhdw=="  # base64 of b"\x01raw"
    assert envelope["error"]["category"] == "deserialization"


def test_a_full_producer_queue_is_waited_out_not_dropped(make_fake_producer: Any) -> None:
    producer = make_fake_producer(full_for=3)
    router = FailureRouter(Settings(), producer=producer)

    router.to_dlq(failure(), [], now_ms=1)

    assert len(producer.produced) == 1
    assert len(producer.polls) == 3  # served delivery reports to make room, three times


def test_deliveries_without_a_callback_are_remembered_when_they_fail(
    make_fake_producer: Any,
) -> None:
    producer = make_fake_producer(fail_topics=("orders_dlq",))
    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=producer)

    router.to_dlq(failure(), [], now_ms=1)
    router.poll()

    assert router.errors == ["orders_dlq: Broker: refused"]


def test_a_dead_letter_the_broker_refuses_is_sent_again_in_its_reduced_form(
    make_fake_producer: Any,
) -> None:
    producer = make_fake_producer()
    too_large = 10  # MSG_SIZE_TOO_LARGE: the record, not the broker
    refused: list[Any] = []
    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=producer)
    calls = {"n": 0}

    def expect(on_refused: Any = None) -> Any:
        def callback(err: Any, msg: Any) -> None:
            calls["n"] += 1
            if on_refused is not None and calls["n"] == 1:
                big = type("Err", (), {"code": lambda s: too_large, "str": lambda s: "big"})()
                refused.append(msg.topic())
                on_refused(big, msg, expect)  # msg: the report's key and value, no headers

        return callback

    router.to_dlq(failure(order=None), [("trace", b"t")], now_ms=1, expect=expect)
    router.poll()

    full, small = producer.produced
    assert refused == ["orders_dlq"]
    reduced = json.loads(small["value"])
    assert reduced["reduced"] == "big"
    assert reduced["raw_value_b64"] == ""
    assert small["key"] == full["key"]
    assert ("trace", b"t") not in small["headers"]
    # Our own headers, written again from the envelope: as the full dead letter had them.
    assert small["headers"] == [(k, v) for k, v in full["headers"] if k.startswith("orderproc.")]


def test_a_retry_record_the_broker_refuses_is_dead_lettered_instead(
    make_fake_producer: Any,
) -> None:
    producer = make_fake_producer()
    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=producer)
    refusals = iter([True])

    def expect(on_refused: Any = None) -> Any:
        def callback(err: Any, msg: Any) -> None:
            if on_refused is not None and next(refusals, False):
                big = type("Err", (), {"code": lambda s: 10, "str": lambda s: "big"})()
                on_refused(big, msg, expect)

        return callback

    router.to_retry(failure(1), "orders.retry.1", 5, [], expect=expect)
    router.poll()

    assert [p["topic"] for p in producer.produced] == ["orders.retry.1", "orders_dlq"]


def test_a_produce_refused_for_the_principal_is_a_delivery_error_not_a_traceback() -> None:
    class Unauthorized:
        def produce(self, topic: str, **kwargs: Any) -> None:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))

    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=Unauthorized())
    acknowledged: list[Any] = []

    with pytest.raises(DeliveryError, match=r"^cannot produce to orders_dlq: denied$"):
        router.to_dlq(failure(), [], now_ms=1, expect=lambda *a: acknowledged.append)

    assert acknowledged == []  # not reported as the record's refusal


def test_a_dead_letter_the_client_refuses_before_sending_is_sent_reduced_in_its_batch() -> None:
    class RefusesFirst:
        """The client's own refusal (larger than its message.max.bytes): no delivery report."""

        def __init__(self) -> None:
            self.produced: list[dict[str, Any]] = []

        def produce(self, topic: str, **kwargs: Any) -> None:
            if not self.produced:
                self.produced.append({})  # the refused attempt
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
            self.produced.append({"topic": topic, **kwargs})

    producer = RefusesFirst()
    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=producer)
    batch = PendingBatch()

    router.to_dlq(failure(3), [("trace", b"t")], now_ms=1_700_000_009_000,
                  expect=batch.expect_delivery)  # fmt: skip

    _, small = producer.produced
    assert small["topic"] == "orders_dlq" and small["key"] == b"o-1"
    envelope = json.loads(small["value"])
    assert envelope["reduced"] == "too large" and envelope["attempts"] == 3
    assert dict(small["headers"])["orderproc.attempts"] == b"3"
    assert batch.pending == 1 and batch.errors == []  # waits for the reduced one only


@pytest.mark.parametrize("serve", ["poll", "flush"])
def test_a_replacement_that_finds_the_queue_full_is_sent_after_the_report_not_inside_it(
    make_fake_producer: Any, serve: str
) -> None:
    # Inside a delivery report the refused record still holds its place in the queue:
    # waiting for room there (polling) can wait forever, and nesting polls is unsafe.
    too_large = KafkaError.MSG_SIZE_TOO_LARGE
    producer = make_fake_producer(fail_topics=("orders_dlq",), fail_code=too_large)
    router = FailureRouter(Settings(dlq_topic="orders_dlq"), producer=producer)
    batch = PendingBatch()
    router.to_dlq(failure(3), [], now_ms=1, expect=batch.expect_delivery)
    producer.fail_topics = ()  # the reduced one is taken...
    producer.full_for = 1  # ...once the queue has room

    getattr(router, serve)()  # the refusal is reported: the replacement is deferred, then sent

    full, small = producer.produced
    assert json.loads(small["value"])["reduced"] == "Broker: refused"
    assert small["key"] == full["key"] == b"o-1"
    assert producer.nested_polls == 0 and batch.errors == []
    # Counted until it is delivered: a poll sent it, a flush also waited for its report.
    assert batch.pending == (1 if serve == "poll" else 0)
    router.flush()
    assert batch.pending == 0 and batch.errors == []
