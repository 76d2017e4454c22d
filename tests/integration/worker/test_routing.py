"""Routing on the real broker: a dead letter the DLQ topic refuses is sent again reduced,
from inside its delivery report, without ever polling the producer there."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import Message, Producer

from orderproc.config import Settings
from orderproc.dlq.envelope import Failure
from orderproc.errors import DeserializationError
from orderproc.kafka.clients import reliable_producer_config
from orderproc.models import Source
from orderproc.worker.offsets import PendingBatch
from orderproc.worker.routing import FailureRouter

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)  # before the fix it waited inside the delivery report forever
def test_a_refused_dead_letter_is_resent_reduced_even_when_the_producer_queue_is_full(
    make_settings: Callable[..., Settings],
    topic_factory: Callable[..., str],
    read_all: Callable[[str], list[Message]],
    headers_of: Callable[[Message], dict[str, str]],
) -> None:
    dlq = topic_factory("smalldlq", config={"max.message.bytes": "4096"})
    settings = make_settings().model_copy(update={"dlq_topic": dlq})
    # A queue of one record: while the refused dead letter's report runs, the refused record
    # still takes that place, so the replacement finds the queue full. Polling there to make
    # room would never return; the router sends it after the report instead.
    producer = Producer(reliable_producer_config(settings, **{"queue.buffering.max.messages": 1}))
    # The router thinks dead letters up to 1 MB fit: the broker refuses the 20 KB one.
    router = FailureRouter(settings, producer, max_record_bytes=1_000_000)
    raw = b"\x00" * 20_000
    failure = Failure(
        error=DeserializationError("not an order", raw),
        attempts=1,
        first_failure_ms=1_700_000_001_000,
        last_failure_ms=1_700_000_001_000,
        source=Source(settings.orders_topic, 0, 7, 1_700_000_000_000),
        consumer_group=settings.consumer_group,
        order=None,
        raw_value=raw,
        key=b"k-7",
    )
    batch = PendingBatch()

    router.to_dlq(failure, [("trace", b"t")], now_ms=1_700_000_002_000,
                  expect=batch.expect_delivery)  # fmt: skip
    assert router.flush(60) == 0

    assert batch.pending == 0 and batch.errors == []
    [letter] = read_all(dlq)  # the reduced one only: the full one never got in
    envelope = json.loads(letter.value())
    assert "too large" in envelope["reduced"].lower(), envelope["reduced"]
    assert envelope["raw_value_length"] == 20_000 and envelope["raw_value_b64"] == ""
    assert letter.key() == b"k-7"
    headers = headers_of(letter)
    assert headers["orderproc.source.offset"] == "7" and "trace" not in headers
