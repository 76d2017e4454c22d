"""Routing failed orders to retry topics and the DLQ; every delivery is reported back.

An offset may only move past a failed order once its next home has it, so the
consumer counts these acknowledgements per batch (``orderproc.worker.offsets``)
before storing offsets.

A dead letter always fits: it is built within ``max_record_bytes`` (derived from
the DLQ topic's ``max.message.bytes`` and the producer's own limit), and when the
broker still refuses it for a reason of its own (size, contents) it is sent again
in its smallest form. A retry record the broker refuses goes to the DLQ instead.
Only a DLQ that refuses every record stops the consumer.

Those replacements are sent from inside a delivery report, where the producer must not
be polled: the refused record still holds its place in the producer's queue until the
report returns, so waiting there for room can wait forever (seen on the real broker: a
producer with a one- or three-record queue that polls from its delivery callback until
there is room never returns), and confluent-kafka does not support a nested poll. A
replacement that finds the queue full is kept and sent by the next ``poll`` or
``flush``; its batch counts it meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from orderproc import clock
from orderproc import headers as h
from orderproc.config import Settings
from orderproc.dlq.envelope import Failure
from orderproc.dlq.letter import dead_letter, provenance_headers, reduced
from orderproc.errors import DeliveryError
from orderproc.headers import Header
from orderproc.kafka.clients import (
    PRODUCER_MAX_MESSAGE_BYTES,
    Acknowledge,
    Unsent,
    flush,
    produce,
    refuses_record,
    reliable_producer_config,
    transactional_producer_config,
)

log = logging.getLogger(__name__)

RECORD_OVERHEAD = 512
"""Bytes kept free under the size limit for the record batch framing."""

Expect = Callable[..., Acknowledge]
"""``expect(on_refused=None)``: count one more delivery of the batch, get its callback."""

Refused = Callable[[KafkaError, Message | Unsent, Expect], None]
"""``on_refused(err, refused, expect)``: instead of failing, the broker refused this record
itself (``refused``: its topic, key and value as its delivery report carries them, not its
headers); ``expect`` counts the replacement it sends."""


class _Deferred(NamedTuple):
    """A replacement the producer's full queue refused inside a delivery report."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    on_delivery: Acknowledge


class FailureRouter:
    """Produces retry and DLQ records; ``expect`` counts each one and learns its outcome."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer | None = None,
        *,
        max_record_bytes: int = PRODUCER_MAX_MESSAGE_BYTES,
        make_producer: Callable[[], Producer] | None = None,
    ) -> None:
        self.settings = settings
        config = (transactional_producer_config if settings.exactly_once
                  else reliable_producer_config)  # fmt: skip
        self._make_producer = make_producer or (lambda: Producer(config(settings)))
        self.producer = producer if producer is not None else self._make_producer()
        self.max_record_bytes = max_record_bytes
        self.errors: list[str] = []  # failed deliveries of records sent outside a batch
        self._deferred: deque[_Deferred] = deque()

    @property
    def limit(self) -> int:
        """The largest record the router writes (key + value + headers)."""
        return max(1024, min(self.max_record_bytes, PRODUCER_MAX_MESSAGE_BYTES) - RECORD_OVERHEAD)

    def _unbatched(self, on_refused: Refused | None = None) -> Acknowledge:
        def remember(err: KafkaError | None, msg: Message | Unsent | None) -> None:
            if (
                err is not None
                and on_refused is not None
                and msg is not None
                and refuses_record(err)
            ):
                on_refused(err, msg, self._unbatched)
            elif err is not None:
                self.errors.append(f"{msg.topic() if msg else '?'}: {err.str()}")

        return remember

    def to_retry(
        self,
        failure: Failure,
        topic: str,
        due_ms: int,
        headers: list[Header],
        *,
        expect: Expect | None = None,
    ) -> None:
        """Send the original bytes to a retry topic, due at ``due_ms``.

        If the broker refuses the record itself, the order is dead-lettered instead
        (it could never be retried through that topic).
        """
        expect = expect or self._unbatched
        out = h.foreign(headers) + provenance_headers(failure)
        out.append((h.RETRY_DUE_MS, h.number(due_ms)))

        def instead(err: KafkaError, _refused: Message | Unsent, expect: Expect) -> None:
            log.warning("%s refused a retry record (%s); dead-lettering it", topic, err.str())
            self.to_dlq(failure, headers, now_ms=clock.now_ms(), expect=expect, in_report=True)

        self._send(topic, failure.key, failure.raw_value, out, expect(instead))

    def to_dlq(
        self,
        failure: Failure,
        headers: list[Header],
        *,
        now_ms: int,
        expect: Expect | None = None,
        in_report: bool = False,
    ) -> None:
        """Send the dead letter, keeping the original key and headers within the size limit.

        ``in_report``: called from a delivery report (never wait for room there).
        """
        expect = expect or self._unbatched
        record = dead_letter(failure, headers, now_ms=now_ms, max_bytes=self.limit)
        # The fallback is the same for every dead letter: a record in flight keeps no
        # failure, record or headers alive (measured on make bench's records fed to the
        # batch handler: 31 to 27 us a dead letter).
        self._send(self.settings.dlq_topic, record.key, record.value, record.headers,
                   expect(self._resend_reduced), in_report=in_report)  # fmt: skip

    def _resend_reduced(self, err: KafkaError, refused: Message | Unsent, expect: Expect) -> None:
        """The DLQ refused a dead letter: send it again in its smallest form."""
        log.warning("the DLQ refused a dead letter (%s); sending it reduced", err.str())
        small = reduced(refused.key(), refused.value() or b"", err.str())
        self._send(self.settings.dlq_topic, small.key, small.value, small.headers, expect(),
                   in_report=True)  # fmt: skip

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[Header],
        on_delivery: Acknowledge,
        *,
        in_report: bool = False,
    ) -> None:
        try:
            produce(self.producer, topic, key=key, value=value, headers=headers,
                    on_delivery=on_delivery, wait=not in_report)  # fmt: skip
        except BufferError:  # full, inside a delivery report: the next poll or flush sends it
            self._deferred.append(_Deferred(topic, key, value, headers, on_delivery))
        except KafkaException as exc:
            if not refuses_record(exc.args[0]):
                # Not this record (e.g. our principal may not write the topic): stop.
                raise DeliveryError(f"cannot produce to {topic}: {exc.args[0].str()}") from exc
            # The client refused it before sending (e.g. larger than message.max.bytes):
            # report it through the record's own callback, as the broker would have.
            on_delivery(exc.args[0], Unsent(topic, key, value))

    def renew_producer(self) -> None:
        """A new producer in place of one a fatal error ended. What the old one still held
        is dropped: in exactly-once mode that is the open transaction, which the new
        producer's ``init_transactions`` aborts (its batch is read again)."""
        with contextlib.suppress(KafkaException, RuntimeError):
            self.producer.purge()
        self._deferred.clear()
        self.producer = self._make_producer()

    def poll(self) -> None:
        """Serve delivery reports that have arrived, then send deferred replacements."""
        self.producer.poll(0)
        self._send_deferred()

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for every routed record; return how many are still unacknowledged."""
        timeout = (
            timeout_s if timeout_s is not None else self.settings.delivery_timeout_ms / 1000 + 5
        )
        deadline = time.monotonic() + timeout
        remaining = flush(self.producer, timeout)
        while self._deferred:  # replacements the reports just served could not queue
            self._send_deferred()
            remaining = flush(self.producer, max(0.0, deadline - time.monotonic()))
        return remaining

    def _send_deferred(self) -> None:
        # Outside any delivery report: waiting for room is safe here. Reports served while
        # waiting may defer more; they are sent in this same loop. (A DeliveryError here
        # stops the consumer with the batch uncommitted, so the record taken is not lost.)
        # In exactly-once mode nothing stays deferred past this: a report served inside
        # commit_transaction cannot enqueue at all (the transaction then aborts).
        while self._deferred:
            record = self._deferred.popleft()
            self._send(record.topic, record.key, record.value, record.headers,
                       record.on_delivery)  # fmt: skip
