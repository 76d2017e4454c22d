"""Kafka client configurations for every worker and job, and the one produce call.

Each function returns a librdkafka dict built from the settings (connection and
security keys from ``Settings.kafka_config``) plus the keys that job's delivery
guarantee depends on. Producer and consumer keys are never mixed in one dict.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from orderproc.config import Settings
from orderproc.headers import Header

OnDelivery = Callable[[KafkaError | None, Message], None]
"""A delivery report callback: ``(error or None, message)``."""


class Unsent:
    """A record the client refused before sending it, shaped like the ``Message`` of a
    delivery report (topic, key, value; no headers), so one callback handles both."""

    __slots__ = ("_key", "_topic", "_value")

    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class Admin:
    """An ``AdminClient`` destroyed on the thread that closes it: ``with Admin(conf) as admin``.

    confluent-kafka completes admin futures on the client's own librdkafka thread, running
    Python there. A client left to the garbage collector (held, say, by the frame of a
    traceback an exception handler keeps) can be freed by a collection that happens to run
    on that thread, and librdkafka then aborts the process: "rd_kafka_destroy() called from
    librdkafka owned thread" (reproduced with a client in a reference cycle whose future's
    callback collects). So callers hold this wrapper, never the client itself, and
    ``close`` drops the wrapper's reference where it is called. One reference it cannot
    drop: a kept exception raised inside one of the client's own Python methods holds that
    method's frame (``self``); a request still in flight is also needed for the abort.
    """

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._client: AdminClient | None = AdminClient(dict(conf))

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("_client")
        if client is None:
            raise RuntimeError("the Kafka admin client is closed")
        return getattr(client, name)

    def close(self) -> None:
        """Destroy the client now, on this thread (idempotent)."""
        self._client = None

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Acknowledge = Callable[[KafkaError | None, Message | Unsent | None], None]
"""A delivery callback that also takes an ``Unsent`` for the message: the record was refused
before it was sent, and the caller reports that through the same callback."""


PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: the producer refuses larger records itself."""

PER_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError._BAD_MSG,
        KafkaError._INVALID_ARG,
        KafkaError.POLICY_VIOLATION,
    }
)
"""Errors about one record (its size or contents), not about the broker or the topic."""


ACCESS_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
    }
)
"""Kafka refused *us* (who we are, or what our principal may do): never one record's fault.

A job that meets one stops (its batch not committed) instead of routing records elsewhere;
``orderproc.kafka.access.refusal`` says it in one line."""


def refuses_record(err: KafkaError | None) -> bool:
    """True when the broker or the client refused this record, not every record.

    An authorization failure (``ACCESS_ERRORS``) is never about the record: it is not
    one, so the caller stops rather than dead-letter or shrink the record.
    """
    return err is not None and err.code() in PER_RECORD_ERRORS


def refuses_access(err: KafkaError | None) -> bool:
    """True when Kafka refused our principal (``ACCESS_ERRORS``), not this record."""
    return err is not None and err.code() in ACCESS_ERRORS


ONE_REQUEST_IN_FLIGHT = {"max.in.flight.requests.per.connection": 1}
"""What keeps a producer that is idempotent but not transactional from writing a record
twice. With more requests in flight, a request that fails (a leader without enough in-sync
replicas while the cluster recovers) makes the broker answer the ones behind it
``OUT_OF_ORDER_SEQUENCE_NUMBER``; librdkafka then bumps the producer epoch and sends every
unacknowledged batch again under it, including batches the broker had already written,
which it can no longer recognise as repeats (librdkafka issue #4953, still open in 2.16;
the Java client retries without a bump). With one request per broker connection there is
never a request behind a failed one. Seen once: 3 orders written twice across the loss of
two of three brokers (``tests/faults/test_cluster_broker_loss.py``). The cost is small: a
producer writing unthrottled is bound by Python, not by round trips (200,000 orders to one
local broker by ``bench.baselines.produce_encode``, twice each: 89,800 and 94,600 a second
with one request in flight, 89,700 and 87,300 with five). A transactional producer keeps
five: its bump aborts the transaction, so a copy written before it is never read.
"""


def reliable_producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent producer that waits for all in-sync replicas and writes each record
    once (``ONE_REQUEST_IN_FLIGHT``)."""
    return settings.kafka_config(
        **{**reliable_producer_overrides(settings), **ONE_REQUEST_IN_FLIGHT, **overrides}
    )


def reliable_producer_overrides(settings: Settings) -> dict[str, Any]:
    """The producer keys delivery depends on, laid over any connection config."""
    return {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "delivery.timeout.ms": settings.delivery_timeout_ms,
    }


def transactional_delivery_timeout_ms(settings: Settings) -> int:
    """How long a transactional producer's record may wait for its acknowledgement.

    A record cannot outlive its transaction (librdkafka refuses a ``delivery.timeout.ms``
    above ``transaction.timeout.ms``), so the shorter of the two: an outage longer than
    the transaction timeout aborts the batch or replay chunk, which is then done again.
    """
    return min(settings.delivery_timeout_ms, settings.transaction_timeout_ms)


def _transactional_overrides(settings: Settings, transactional_id: str) -> dict[str, Any]:
    return {
        **reliable_producer_overrides(settings),
        "delivery.timeout.ms": transactional_delivery_timeout_ms(settings),
        "transactional.id": transactional_id,
        "transaction.timeout.ms": settings.transaction_timeout_ms,
    }


def transactional_producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The exactly-once consumer's producer: its records and offsets commit together."""
    return settings.kafka_config(
        **{**_transactional_overrides(settings, settings.transactional_id), **overrides}
    )


def replay_producer_overrides(settings: Settings) -> dict[str, Any]:
    """The replay's producer keys, laid over any connection config (``orderproc.dlq.publish``)."""
    return _transactional_overrides(settings, settings.replay_transactional_id)


def replay_producer_config(settings: Settings) -> dict[str, Any]:
    return settings.kafka_config(**replay_producer_overrides(settings))


def replay_reader_overrides(settings: Settings) -> dict[str, Any]:
    """A consumer that reads back what a replay committed; it never commits offsets."""
    return {
        "group.id": f"{settings.dlq_group}.replay-check",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }


def replay_reader_config(settings: Settings) -> dict[str, Any]:
    return settings.kafka_config(**replay_reader_overrides(settings))


def order_consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The order consumer: offsets stored by the application, committed by librdkafka
    (at least once) or sent in the batch's transaction (exactly once)."""
    return settings.kafka_config(
        **{
            "group.id": settings.consumer_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": not settings.exactly_once,
            # Retry topics are written in transactions in exactly-once mode: never read an
            # aborted attempt's records. (Without transactions this changes nothing.)
            "isolation.level": "read_committed",
            # Offsets are stored only for durable batches (orderproc.worker.offsets).
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": settings.session_timeout_ms,
            # A resumed retry partition joins the next fetch request: keep them short.
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "partition.assignment.strategy": "cooperative-sticky",
            "statistics.interval.ms": 10000,
            **overrides,
        }
    )


def share_consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The order consumer in a share group: every record acknowledged explicitly, after
    its outcome is durable (``orderproc.worker.share``)."""
    return settings.kafka_config(
        **{
            "group.id": settings.consumer_group,
            "share.acknowledgement.mode": "explicit",
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "statistics.interval.ms": 10000,
            **overrides,
        }
    )


def monitor_consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The DLQ monitor: stores the offset of each record once it is printed."""
    return settings.kafka_config(
        **{
            "group.id": settings.dlq_group,
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            # Committed every second, like the order consumer: `orderproc status` tells a
            # group that is stuck from one that commits by offsets not moving for a while.
            "auto.commit.interval.ms": 1000,
            "statistics.interval.ms": 10000,  # its lag (orderproc.metrics.lag)
            **overrides,
        }
    )


def drain_group(settings: Settings) -> str:
    """The drain's own consumer group: independent of ``orderproc dlq tail``'s group."""
    return f"{settings.dlq_group}.drain"


def drain_consumer_overrides(settings: Settings) -> dict[str, Any]:
    """Consumer keys the drain relies on, laid over any connection config."""
    return {
        "group.id": drain_group(settings),
        # Offsets are committed by the drain itself, after the database commit.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
    }


def drain_consumer_config(settings: Settings) -> dict[str, Any]:
    """The drain's consumer when it is not built from an Airflow connection."""
    return settings.kafka_config(**drain_consumer_overrides(settings))


def produce(
    producer: Producer,
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header] = (),
    on_delivery: OnDelivery | None = None,
    wait: bool = True,
) -> None:
    """Hand one record to the producer, waiting for room when its local queue is full.

    A full queue (``BufferError``) is backpressure, not failure: serving delivery
    reports frees room, so poll and try again. Delivery itself is reported later,
    to ``on_delivery``. Inside a delivery report the producer must not be polled:
    there ``wait=False`` raises the ``BufferError`` instead.
    """
    # None, not an empty list, when there are none: confluent-kafka then builds no header
    # set for the record (the order producer: 56,000 against 60,000 orders a second).
    wire: list[tuple[str, str | bytes | None]] | None = list(headers) if headers else None
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=wire, on_delivery=on_delivery)
            return
        except BufferError:
            if not wait:
                raise
            producer.poll(0.1)


FLUSH_STEP_S = 0.1
"""The longest single ``flush``/``poll`` call: below confluent-kafka's own 200 ms chunks."""


def flush(producer: Producer, timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for the delivery report of every queued record; return how
    many are still unacknowledged.

    Calls ``Producer.flush`` in steps shorter than 200 ms. A longer ``flush`` loops in
    200 ms chunks inside confluent-kafka and goes on serving delivery reports after a
    fatal error (a transactional producer fenced by a newer one) has set its exception:
    each report then fails with ``SystemError`` and so does ``flush`` ("returned NULL
    without setting an exception"; reproduced with two producers of one transactional
    id). A short ``flush`` ends at the fatal error and raises it: a ``KafkaException``.
    """
    deadline = time.monotonic() + timeout_s
    left = 0
    for _ in range(max(1, math.ceil(timeout_s / FLUSH_STEP_S))):  # each step blocks its time
        left = int(producer.flush(min(FLUSH_STEP_S, max(0.0, deadline - time.monotonic()))))
        if left == 0 or time.monotonic() >= deadline:
            break
    return left


def poll_for(producer: Producer, seconds: float) -> None:
    """Serve delivery reports for ``seconds`` (in short polls, as ``flush`` does)."""
    deadline = time.monotonic() + seconds
    for _ in range(max(1, math.ceil(seconds / FLUSH_STEP_S))):
        producer.poll(min(FLUSH_STEP_S, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            return
