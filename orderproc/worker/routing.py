"""Routing failed orders to retry topics and the DLQ; every delivery is reported back.

An offset may only move past a failed order once its next home has it, so the
consumer counts these acknowledgements per batch (``orderproc.worker.offsets``)
before storing offsets.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from orderproc import headers as h
from orderproc.config import Settings
from orderproc.dlq.envelope import Failure, build_envelope, encode_envelope, provenance_headers
from orderproc.headers import Header
from orderproc.kafka.clients import OnDelivery, produce, reliable_producer_config


class FailureRouter:
    """Produces retry and DLQ records; the caller's ``on_delivery`` learns each outcome."""

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        self.producer = producer or Producer(reliable_producer_config(settings))
        self.errors: list[str] = []  # failed deliveries of records sent without a callback

    def _remember(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")

    def to_retry(
        self,
        failure: Failure,
        topic: str,
        due_ms: int,
        headers: list[Header],
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Send the original bytes to a retry topic, due at ``due_ms``."""
        out = h.foreign(headers) + provenance_headers(failure)
        out.append((h.RETRY_DUE_MS, h.number(due_ms)))
        produce(
            self.producer,
            topic,
            key=failure.key,
            value=failure.raw_value,
            headers=out,
            on_delivery=on_delivery or self._remember,
        )

    def to_dlq(
        self,
        failure: Failure,
        headers: list[Header],
        *,
        now_ms: int,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Send the envelope to the DLQ, keeping the original key and headers."""
        produce(
            self.producer,
            self.settings.dlq_topic,
            key=failure.key,
            value=encode_envelope(build_envelope(failure, now_ms=now_ms)),
            headers=h.foreign(headers) + provenance_headers(failure),
            on_delivery=on_delivery or self._remember,
        )

    def poll(self) -> None:
        """Serve delivery reports that have arrived (never blocks)."""
        self.producer.poll(0)

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for every routed record; return how many are still unacknowledged."""
        timeout = (
            timeout_s if timeout_s is not None else self.settings.delivery_timeout_ms / 1000 + 5
        )
        return int(self.producer.flush(timeout))
