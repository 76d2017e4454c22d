"""Routing failed orders to retry topics and the DLQ; every delivery is reported back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from orderproc.config import Settings
from orderproc.dlq import (
    HEADER_PREFIX,
    Failure,
    Header,
    build_envelope,
    encode_envelope,
    foreign_headers,
    provenance_headers,
)

log = logging.getLogger(__name__)

RETRY_DUE_HEADER = HEADER_PREFIX + "retry.due.ms"

OnDelivery = Callable[[KafkaError | None, Message], None]


def reliable_producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent producer that waits for all in-sync replicas."""
    return settings.kafka_config(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "delivery.timeout.ms": settings.delivery_timeout_ms,
            **overrides,
        }
    )


class FailureRouter:
    """Produces retry and DLQ records; the caller's ``on_delivery`` learns each outcome.

    An offset may only move past a failed order once its next home has it, so the
    consumer counts these acknowledgements per batch before storing offsets.
    """

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self.producer = producer or Producer(reliable_producer_config(settings))
        self.errors: list[str] = []  # failed deliveries of records sent without a callback

    def _remember(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[Header],
        on_delivery: OnDelivery | None,
    ) -> None:
        on_delivery = on_delivery or self._remember
        kafka_headers: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=kafka_headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then try again.
                self.producer.poll(0.1)

    def to_retry(
        self,
        failure: Failure,
        topic: str,
        due_ms: int,
        headers: list[Header],
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Send the original bytes to a retry topic, due at ``due_ms``."""
        out = foreign_headers(headers) + provenance_headers(failure)
        out.append((RETRY_DUE_HEADER, str(due_ms).encode()))
        self._produce(topic, failure.key, failure.raw_value, out, on_delivery)

    def to_dlq(
        self,
        failure: Failure,
        headers: list[Header],
        *,
        now_ms: int,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Send the envelope to the DLQ, keeping the original key and headers."""
        value = encode_envelope(build_envelope(failure, now_ms=now_ms))
        out = foreign_headers(headers) + provenance_headers(failure)
        self._produce(self.settings.dlq_topic, failure.key, value, out, on_delivery)

    def poll(self) -> None:
        """Serve delivery reports that have arrived (never blocks)."""
        self.producer.poll(0)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for every routed record; return how many are still unacknowledged."""
        timeout = (
            timeout_s if timeout_s is not None else self.settings.delivery_timeout_ms / 1000 + 5
        )
        return int(self.producer.flush(timeout))
