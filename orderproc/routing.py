"""Routing failed orders to retry topics and the DLQ, with every delivery checked."""

from __future__ import annotations

import logging
import threading
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
from orderproc.errors import DeliveryError

log = logging.getLogger(__name__)

RETRY_DUE_HEADER = HEADER_PREFIX + "retry.due.ms"


def reliable_producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent producer that waits for all in-sync replicas."""
    return settings.kafka_config(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "delivery.timeout.ms": settings.delivery_timeout_ms,
            **overrides,
        }
    )


class FailureRouter:
    """Produces retry and DLQ records and remembers every failed delivery.

    Callers ``flush()`` before storing the offsets of the records they routed:
    an offset may only move past a failed order once its next home has it.
    """

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self.producer = producer or Producer(reliable_producer_config(settings))
        self._errors: list[str] = []
        self._lock = threading.Lock()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err.str()}")

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> None:
        kafka_headers: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=kafka_headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then try again.
                self.producer.poll(0.1)

    def to_retry(
        self, failure: Failure, topic: str, due_ms: int, headers: list[Header] | None
    ) -> None:
        """Send the original bytes to a retry topic, due at ``due_ms``."""
        out = foreign_headers(headers) + provenance_headers(failure)
        out.append((RETRY_DUE_HEADER, str(due_ms).encode()))
        self._produce(topic, failure.key, failure.raw_value, out)

    def to_dlq(self, failure: Failure, headers: list[Header] | None, *, now_ms: int) -> None:
        """Send the envelope to the DLQ, keeping the original key and headers."""
        value = encode_envelope(build_envelope(failure, now_ms=now_ms))
        out = foreign_headers(headers) + provenance_headers(failure)
        self._produce(self.settings.dlq_topic, failure.key, value, out)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every routed record; raise ``DeliveryError`` if any was not acknowledged."""
        timeout = (
            timeout_s if timeout_s is not None else self.settings.delivery_timeout_ms / 1000 + 5
        )
        remaining = self.producer.flush(timeout)
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining:
            errors.append(f"{remaining} records still unacknowledged after {timeout:.0f}s")
        if errors:
            raise DeliveryError(f"{len(errors)} retry/DLQ deliveries failed, first: {errors[0]}")
