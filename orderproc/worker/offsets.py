"""The one place where the consumer's offsets move: stored, committed, rewound.

A batch becomes *durable* when its processed orders are committed to the store
(done before it gets here) and every retry/DLQ record it produced is
acknowledged by the broker. Offsets are stored strictly in batch order and only
for durable batches; librdkafka's auto-commit then commits what was stored, and
``commit_on_revoke`` commits synchronously before a partition changes hands.
Waiting for acknowledgements per batch would stall the loop for a broker round
trip, so up to ``max_in_flight`` batches wait here while the next ones are
consumed. ``rewind`` moves the fetch position back to a record that was read but
not handled (a paused partition), so it is the next one read.

Exactly once (``TransactionalOffsets``): each batch runs in a Kafka transaction;
its retry/DLQ records and its offsets (``send_offsets_to_transaction``) commit
together, after its processed orders are in the store (an idempotent write, so a
batch whose transaction aborted is simply handled again).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from orderproc.config import Settings
from orderproc.errors import DeliveryError
from orderproc.kafka.clients import (
    Acknowledge,
    Unsent,
    refuses_record,
    transactional_delivery_timeout_ms,
)
from orderproc.records import TP
from orderproc.worker.brokers import BrokerWait
from orderproc.worker.routing import FailureRouter, Refused

log = logging.getLogger(__name__)


@dataclass
class PendingBatch:
    """Offsets of one handled batch and the acknowledgements it still waits for."""

    next_offsets: dict[TP, int] = field(default_factory=dict)
    oldest_timestamp_ms: int | None = None
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    submitted_at: float | None = None
    """When it began to wait for its acknowledgements (``time.monotonic``)."""

    def expect_delivery(self, on_refused: Refused | None = None) -> Acknowledge:
        """Count one routed record; the returned callback is its ``on_delivery``.

        ``on_refused`` is called instead of failing the batch when the record itself
        was refused (its size or contents, ``refuses_record``); it sends a
        replacement, counted by the ``expect_delivery`` it is given, before this one is
        taken off the count, so the batch never looks complete in between.
        """
        self.pending += 1
        if on_refused is None:
            return self._acknowledged

        def acknowledged(err: KafkaError | None, msg: Message | Unsent | None) -> None:
            if msg is None or not refuses_record(err):
                self._acknowledged(err, msg)
                return
            try:
                on_refused(err, msg, self.expect_delivery)  # type: ignore[arg-type]  # refused: err is set
            except Exception as exc:  # the replacement could not be sent: the batch fails
                self.errors.append(f"replacement for a refused record: {exc}")
            self.pending -= 1

        return acknowledged

    def _acknowledged(self, err: KafkaError | None, msg: Message | Unsent | None) -> None:
        self.pending -= 1
        if err is not None:
            topic = msg.topic() if msg is not None else "?"
            self.errors.append(f"{topic}: {err.str()}")


class OffsetPipeline:
    """Stores offsets of durable batches, in order; refuses to pass a failed delivery."""

    def __init__(
        self,
        consumer: Consumer,
        router: FailureRouter,
        *,
        max_in_flight: int = 4,
        on_stored: Callable[[PendingBatch], None] | None = None,
        brokers: BrokerWait | None = None,
    ) -> None:
        self.consumer = consumer
        self.router = router
        self.max_in_flight = max_in_flight
        self._on_stored = on_stored
        self.brokers = brokers or BrokerWait()
        self._waiting: deque[PendingBatch] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def submit(self, batch: PendingBatch) -> None:
        """Hand over a batch whose rows are committed; store what has become durable."""
        batch.submitted_at = time.monotonic()
        self._waiting.append(batch)
        self.advance(wait=len(self._waiting) > self.max_in_flight)

    def advance(self, *, wait: bool = False) -> None:
        """Store the offsets of every leading durable batch.

        With ``wait`` it first waits for all outstanding acknowledgements (revoke,
        shutdown, or too many batches in flight).

        Raises:
            DeliveryError: a retry/DLQ record was refused or never acknowledged;
                neither its batch nor any later one is stored.
        """
        if wait and self._waiting:
            remaining = self._flush()
            if remaining:
                raise DeliveryError(f"{remaining} retry/DLQ records unacknowledged; stopping")
        else:
            self.router.poll()
        while self._waiting and self._waiting[0].pending == 0:
            batch = self._waiting.popleft()
            if batch.errors:
                self._waiting.clear()
                raise DeliveryError(
                    f"{len(batch.errors)} retry/DLQ deliveries failed, first: {batch.errors[0]}"
                )
            self._store(batch)
        self._check_brokers()

    def _flush(self) -> int:
        """Wait for every acknowledgement (the delivery timeout at most), in one-second
        steps, so a wait for brokers that do not answer is told (``BrokerWait``)."""
        total_s = self.router.settings.delivery_timeout_ms / 1000 + 5
        deadline = time.monotonic() + total_s
        remaining = 0
        for _ in range(math.ceil(total_s)):  # each step blocks its time (as ``flush`` does)
            remaining = self.router.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            self._check_brokers()
            if remaining == 0 or time.monotonic() >= deadline:
                break
        return remaining

    def _check_brokers(self) -> None:
        late = next((b for b in self._waiting if b.pending), None)
        unacknowledged = sum(b.pending for b in self._waiting)
        self.brokers.check(unacknowledged, late.submitted_at if late else None)

    def _store(self, batch: PendingBatch) -> None:
        if batch.next_offsets:
            # Safe: the batch's rows are committed and its routed records acknowledged.
            self.consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
            )
        if self._on_stored:
            self._on_stored(batch)

    def start(self) -> None:
        """Nothing to prepare without transactions."""

    def begin(self) -> None:
        """Nothing to open without transactions: offsets are stored per durable batch."""

    def rewind(self, topic: str, partition: int, offset: int) -> None:
        """Make ``offset`` the next record fetched from the partition (it was not handled)."""
        self.consumer.seek(TopicPartition(topic, partition, offset))

    def commit_on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Partitions are leaving: make every handled batch durable, then commit synchronously.

        Called from the rebalance callback, inside ``consume()``; the next owner
        starts exactly after what this instance made durable.
        """
        self.advance(wait=True)
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc.args[0].str())


def offsets_for(
    settings: Settings,
    consumer: Consumer,
    router: FailureRouter,
    on_stored: Callable[[PendingBatch], None],
    brokers: BrokerWait | None = None,
) -> OffsetPipeline:
    """The offset pipeline of the settings' processing guarantee."""
    if settings.exactly_once:
        timeout_s = transactional_delivery_timeout_ms(settings) / 1000 + 5
        return TransactionalOffsets(consumer, router, timeout_s=timeout_s, on_stored=on_stored)
    return OffsetPipeline(consumer, router, on_stored=on_stored, brokers=brokers)


class BatchAborted(Exception):
    """The batch's transaction was aborted: its records are discarded, its offsets not
    committed; the consumer reads the batch again (``_Batch.first_offsets``)."""


class TransactionalOffsets(OffsetPipeline):
    """Exactly once: one Kafka transaction per batch for its routed records and its offsets.

    Failure windows (``docs/reliability.md``): a crash before the transaction commits
    leaves it open until the restarted instance (same transactional id) fences it
    and the broker aborts it; ``read_committed`` readers never see its records, and
    the batch is read again: its store rows are already there (ignored as
    redeliveries), its records are written again, once. A crash after the commit
    loses nothing: offsets and records moved together.
    """

    RETRIES = 3
    STUCK_GRACE_S = 10.0
    """How long past its own timeout ``send_offsets_to_transaction`` may take to return."""
    RENEWED_WITHIN_S = 300.0
    """A producer ended by a fatal error again this soon after the last renewal: another
    live instance uses this instance id (each would fence the other): stop."""

    def __init__(
        self,
        consumer: Consumer,
        router: FailureRouter,
        *,
        timeout_s: float,
        on_stored: Callable[[PendingBatch], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(consumer, router, on_stored=on_stored)
        self.producer = router.producer
        self.timeout_s = timeout_s
        self._clock = clock
        self._renewed_at: float | None = None

    def start(self) -> None:
        """Register the transactional id; this fences an earlier instance that used it."""
        try:
            self.producer.init_transactions(self.timeout_s)
        except KafkaException as exc:
            raise DeliveryError(f"cannot start transactions: {exc.args[0].str()}") from exc

    def begin(self) -> None:
        self.producer.begin_transaction()

    def submit(self, batch: PendingBatch) -> None:
        """Commit the batch's records and offsets in its transaction (the store rows are in).

        Raises:
            BatchAborted: the transaction was aborted (the batch is to be read again).
            DeliveryError: transactions failed for good (e.g. this instance was fenced).
        """
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
        for attempt in range(1, self.RETRIES + 1):
            try:
                if offsets:
                    if not self._send_offsets(offsets):
                        self._replace_stuck_producer()
                        raise BatchAborted("send_offsets_to_transaction did not return")
                    offsets = []  # sent: a retry only repeats the commit
                self.producer.commit_transaction(self.timeout_s)
                break
            except KafkaException as exc:
                err = exc.args[0]
                if err.txn_requires_abort():
                    log.warning("transaction aborted (%s); reading the batch again", err.str())
                    self.producer.abort_transaction(self.timeout_s)
                    raise BatchAborted(err.str()) from exc
                if err.fatal():
                    self._renew(err)
                    raise BatchAborted(err.str()) from exc
                if not err.retriable() or attempt == self.RETRIES:
                    raise DeliveryError(f"transaction failed: {err.str()}") from exc
        if self._on_stored:
            self._on_stored(batch)

    def _send_offsets(self, offsets: list[TopicPartition]) -> bool:
        """``send_offsets_to_transaction`` on a thread of its own: False if it has not
        returned ``STUCK_GRACE_S`` after its timeout (its exception, if any, is raised here).

        librdkafka can block in it past its timeout when the group coordinator went away
        (librdkafka issues #5456 and #5511, open in 2.16): an exactly-once consumer stayed in
        this call from the end of a rolling restart until the test gave up on it, 120 s
        after its SIGTERM (``tests/faults/test_cluster_broker_loss.py``, its SIGUSR1 stack
        dump). A call that does not return is left on its thread, holding the old producer.
        """
        producer, metadata = self.producer, self.consumer.consumer_group_metadata()
        failed: list[Exception] = []

        def send() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, self.timeout_s)
            except Exception as exc:  # raised again on the consumer's thread
                failed.append(exc)

        thread = threading.Thread(target=send, name="send-offsets", daemon=True)
        thread.start()
        thread.join(self.timeout_s + self.STUCK_GRACE_S)
        if thread.is_alive():
            return False
        if failed:
            raise failed[0]
        return True

    def _replace_stuck_producer(self) -> None:
        """A new producer in place of one stuck in a call: its ``init_transactions`` fences
        the old one and aborts the open transaction; the batch is read again."""
        log.warning("send_offsets_to_transaction has not returned %.0f s after its %.0f s "
                    "timeout (librdkafka #5456); starting a new producer, reading the batch "
                    "again", self.STUCK_GRACE_S, self.timeout_s)  # fmt: skip
        self._new_producer()

    def _new_producer(self) -> None:
        self.router.renew_producer()
        self.producer = self.router.producer
        self.start()

    def _renew(self, err: KafkaError) -> None:
        """A fatal error ended the producer: start a new one, once in a while.

        librdkafka makes an old-epoch answer fatal, as it makes a fence by a newer instance
        with our transactional id. Kafka 4.4 gave the old-epoch answer to a live instance
        whose group coordinator moved mid-transaction in a rolling restart
        (``tests/faults/test_cluster_broker_loss.py``): no other instance, so a new producer
        (``init_transactions`` aborts the open transaction) and the batch read again lose
        and repeat nothing. A second fatal error soon after means another instance does
        have our id: stop, as before.
        """
        now = self._clock()
        if self._renewed_at is not None and now - self._renewed_at < self.RENEWED_WITHIN_S:
            raise DeliveryError(
                f"transaction failed: {err.str()} (again {now - self._renewed_at:.0f} s after "
                "a new producer: is another consumer running with this --instance-id?)"
            )
        log.warning("transactions failed (%s); starting a new producer, reading the batch "
                    "again", err.str())  # fmt: skip
        self._renewed_at = now
        self._new_producer()

    def advance(self, *, wait: bool = False) -> None:
        """Serve delivery reports; batches are committed one by one in ``submit``."""
        self.router.poll()

    def commit_on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Nothing to do: every handled batch was committed in its transaction already."""
