"""One consumed batch: decide per record, act on each outcome, and what a run did.

``BatchHandler.handle`` walks a batch in order: each record is copied (``Record.of``),
decided (``orderproc.worker.decide``: pure) and the outcome carried out here: a row
for the store, a retry or dead letter through the router, a paused partition. It
moves no offset: the consumer makes the batch durable afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, assert_never

from confluent_kafka import Consumer, Message

from orderproc.clock import now_ms, utcnow
from orderproc.config import Settings
from orderproc.dlq.envelope import Failure
from orderproc.metrics import ConsumerMetrics, ReplayOutcome
from orderproc.records import TP, Record
from orderproc.store.processed import ProcessedRow
from orderproc.worker.breaker import FloodGuard
from orderproc.worker.decide import (
    DeadLetter,
    Decider,
    NotDue,
    Processed,
    RegistryDown,
    RetryInPlace,
    RetryLater,
)
from orderproc.worker.holds import PartitionHolds
from orderproc.worker.offsets import PendingBatch
from orderproc.worker.outage import RegistryOutage
from orderproc.worker.outcomes import ConsumerStats, Outcomes, on_message_error
from orderproc.worker.routing import FailureRouter


@dataclass
class Batch(PendingBatch):
    """One consumed batch while it is handled: its rows and per-topic counts.

    ``now``/``now_ms``: the batch's one clock reading (rows' ``processed_at``, due times).
    """

    messages: list[Any] = field(default_factory=list)
    now: datetime = field(default_factory=utcnow)
    now_ms: int = 0
    rows: list[ProcessedRow] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # the record of each row
    consumed: dict[str, int] = field(default_factory=dict)
    tripped: bool = False  # the flood breaker tripped while it was handled

    def first_offsets(self) -> dict[TP, int]:
        """Where each partition of the batch began (to read it again)."""
        first: dict[TP, int] = {}
        for msg in self.messages:
            if msg.error() is None:
                first.setdefault((msg.topic(), msg.partition()), msg.offset())
        return first


class BatchHandler:
    """Decides each record of a batch and carries out the outcome."""

    def __init__(
        self,
        settings: Settings,
        decider: Decider,
        router: FailureRouter,
        holds: PartitionHolds,
        flood: FloodGuard,
        consumer: Consumer,
        stats: ConsumerStats,
        metrics: ConsumerMetrics,
        echo: Callable[[str], None] | None,
    ) -> None:
        self.settings = settings
        self.orders_topic = settings.orders_topic
        self.decider = decider
        self.router = router
        self.holds = holds
        self.flood = flood
        self.consumer = consumer
        self.stats = stats
        self.outcomes = Outcomes(
            settings, router, stats, metrics, echo, retry_mode=settings.retry_mode.value
        )
        self._replayed_processed = self.outcomes.replayed[ReplayOutcome.PROCESSED]
        self.in_place: dict[TP, tuple[int, Failure]] = {}  # blocking: offset and last failure
        self.retry_due = 0.0  # monotonic time the latest scheduled retry is due
        self.outage = RegistryOutage(settings.registry_backoff_max_s)

    def handle(self, messages: list[Message]) -> Batch:
        """Handle ``messages`` in order, each outcome carried out in the one ``match`` below.

        A record held back (its partition paused) is read again when the partition resumes,
        and so are its partition's later records. The flood breaker counts main-topic
        records: a success on any attempt, a failure sent to a retry topic or the DLQ.
        """
        batch = Batch(messages=messages, now=datetime.now(UTC), now_ms=now_ms())
        paused, decide, outage = self.holds.paused, self.decider.decide, self.outage
        rows, records, next_offsets = batch.rows, batch.records, batch.next_offsets
        consumed, orders_topic = batch.consumed, self.orders_topic
        ok = 0  # main-topic successes not yet handed to the flood breaker (FloodGuard.ok)
        for i, msg in enumerate(messages):
            if msg.error() is not None:
                on_message_error(msg, self.settings, "consumer")
                continue
            rec = Record.of(msg)
            topic = rec.topic
            tp = (topic, rec.partition)
            if paused and tp in paused:
                continue  # held at an earlier offset of this batch; it will be fetched again
            outcome = decide(rec, batch.now_ms, self._waiting(rec) if self.in_place else None)
            if outage.waiting and type(outcome) is not RegistryDown:
                outage.read(tp)
            main, failed = topic == orders_topic, False
            match outcome:
                case Processed():
                    order, source = outcome.order, outcome.source or rec
                    # tuple.__new__ skips the named tuple's Python-level __new__: handle on the
                    # unit fakes (500 plain orders a batch) ran 2.8 % faster, 2.7 % fewer
                    # instructions.
                    rows.append(tuple.__new__(ProcessedRow, (
                        order.order_id, order.product, order.price, outcome.attempts,
                        source.topic, source.partition, source.offset, batch.now,
                        outcome.replay_id,
                    )))  # fmt: skip
                    records.append(rec)
                    if outcome.replay_id is not None:
                        self._replayed_processed.inc()
                    ok += main
                case RetryLater():
                    self._retry_later(rec, outcome, batch)
                    failed = main
                case DeadLetter():
                    self.dead_letter(rec, outcome.failure, batch)
                    failed = main
                case RetryInPlace():
                    self._retry_in_place(rec, outcome)
                    continue  # held back, as the two below
                case NotDue():
                    self._hold(rec, outcome.wait_s)
                    continue
                case RegistryDown():
                    self._hold(rec, outage.wait_s(tp, outcome.reason))
                    continue
                case _:
                    assert_never(outcome)  # mypy: a new outcome must get its case here
            next_offsets[tp] = rec.offset + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            if failed:
                self.flood.ok(ok)  # the successes before it first: the window keeps the order
                ok = 0
                if self._trips(batch):  # pause everything, rewound to the first unhandled
                    self._hold_all(after=messages[i + 1 :])
                    break
        self.flood.ok(ok)
        self.flood.flush()
        batch.oldest_timestamp_ms = messages[0].timestamp()[1]
        return batch

    def _waiting(self, rec: Record) -> Failure | None:
        """Blocking mode: the record's last failure, when it waited to be tried again in place."""
        waiting = self.in_place.pop(rec.tp, None)
        return waiting[1] if waiting is not None and waiting[0] == rec.offset else None

    def _retry_later(self, rec: Record, outcome: RetryLater, batch: Batch) -> None:
        """Non-blocking retry: the record goes to its retry topic, due at ``due_ms``."""
        self.outcomes.retried(outcome.failure, rec)
        due_in_s = max(0.0, (outcome.due_ms - batch.now_ms) / 1000)
        self.retry_due = max(self.retry_due, time.monotonic() + due_in_s)
        self.router.to_retry(outcome.failure, outcome.topic, outcome.due_ms, rec.headers,
                             expect=batch.expect_delivery)  # fmt: skip

    def _retry_in_place(self, rec: Record, outcome: RetryInPlace) -> None:
        """Blocking retry: pause the partition at this record and keep polling; the batch so
        far is made durable and committed as usual while the backoff runs."""
        self.outcomes.retried(outcome.failure, rec)
        self.in_place[rec.tp] = (rec.offset, outcome.failure)
        self._hold(rec, outcome.delay_s)

    def _hold(self, rec: Record, wait_s: float) -> None:
        self.holds.hold(rec.topic, rec.partition, rec.offset, until=time.monotonic() + wait_s)

    def _trips(self, batch: Batch) -> bool:
        """A main-topic record of ``batch`` failed: True when that trips the flood breaker."""
        if not self.flood.failed():
            return False
        self.stats.flood_breaker_trips += 1
        batch.tripped = True
        return True

    def dead_letter(self, rec: Record, failure: Failure, batch: Batch) -> None:
        """Route ``failure`` to the DLQ as part of ``batch`` (counted, echoed)."""
        self.outcomes.dead_letter(rec, failure, now_ms=batch.now_ms, expect=batch.expect_delivery)

    def _hold_all(self, *, after: list[Message]) -> None:
        """Breaker tripped: rewind every partition to its first unhandled record and pause all."""
        until = time.monotonic() + self.flood.breaker.cooldown_s
        self.holds.hold_all(after, self.consumer.assignment(), until=until)
