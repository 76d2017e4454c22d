"""What became of records, counted and echoed the same way by both consumer modes.

The classic consumer (``orderproc.worker.batch``) and queue mode
(``orderproc.worker.share``) decide alike and acknowledge differently; what they
report does not differ: a retry, a dead letter (routed here, awaited by the caller),
a replayed order's outcome, a record the client reported as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message

from orderproc.config import Settings
from orderproc.dlq.envelope import Failure
from orderproc.errors import DeliveryError
from orderproc.kafka.access import stop_if_refused
from orderproc.metrics import ConsumerMetrics, ReplayOutcome
from orderproc.records import Record
from orderproc.store.processed import ProcessedRow
from orderproc.worker.routing import FailureRouter
from orderproc.worker.sink import ProcessedSink

log = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    """What one run did; returned by ``OrderConsumer.run`` and ``ShareOrderConsumer.run``."""

    consumed: int = 0
    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dead_lettered_by_category: dict[str, int] = field(default_factory=dict)
    average_price: float = 0.0
    flood_breaker_trips: int = 0


class Outcomes:
    """Carries out and counts the outcomes both modes share: retries and dead letters."""

    def __init__(
        self,
        settings: Settings,
        router: FailureRouter,
        stats: ConsumerStats,
        metrics: ConsumerMetrics,
        echo: Callable[[str], None] | None,
        *,
        retry_mode: str,
    ) -> None:
        self.max_attempts = settings.max_attempts
        self.router = router
        self.stats = stats
        self.metrics = metrics
        self._echo = echo
        self._retried = metrics.retried.labels(retry_mode)
        self._dead_lettered: dict[str, Any] = {}  # by category: labels() once each
        self.replayed = {o: metrics.replayed.labels(o.value) for o in ReplayOutcome}

    def retried(self, failure: Failure, rec: Record) -> None:
        """``rec`` failed and will be tried again (``failure.attempts`` tries so far)."""
        if rec.replay_id is not None:
            self.replayed[ReplayOutcome.RETRIED].inc()
        if self._echo is not None:
            self._echo(f"Attempt {failure.attempts}/{self.max_attempts} failed: {failure.error}")
        self.stats.retried += 1
        self._retried.inc()

    def dead_letter(
        self, rec: Record, failure: Failure, *, now_ms: int, expect: Callable[..., Any]
    ) -> None:
        """Route ``failure`` to the DLQ (its acknowledgement goes to ``expect``), counted."""
        # Written at the caller's clock reading, or the failure's own if later (a row the
        # database refused after its batch was decided).
        now = max(now_ms, failure.last_failure_ms)
        self.router.to_dlq(failure, rec.headers, now_ms=now, expect=expect)
        category = failure.category.value
        self.stats.dead_lettered += 1
        by_category = self.stats.dead_lettered_by_category
        by_category[category] = by_category.get(category, 0) + 1
        metric = self._dead_lettered.get(category)
        if metric is None:
            metric = self._dead_lettered[category] = self.metrics.dead_lettered.labels(category)
        metric.inc()
        if rec.replay_id is not None:
            self.replayed[ReplayOutcome.DEAD_LETTERED].inc()
        if self._echo is not None:
            key = failure.order.order_id if failure.order else rec.coordinates
            delivery = failure.delivery_count
            self._echo(f"DLQ: {key} -> {failure.reason}"
                       + (f" (delivery {delivery})" if delivery is not None else ""))  # fmt: skip

    def store(
        self,
        sink: ProcessedSink,
        rows: list[ProcessedRow],
        records: list[Record],
        dead_letter: Callable[[Record, Failure], None],
    ) -> None:
        """Write ``rows`` to the store; a row the database refused goes to ``dead_letter``."""
        written = sink.write(rows, records)
        self.stats.processed += written.processed
        self.stats.duplicates += written.duplicates
        for rec, failure in written.refused:  # the database is up but refused these rows
            dead_letter(rec, failure)


def on_message_error(msg: Message, settings: Settings, client: str) -> None:
    """A message the client reported as an error (not a record): stop, warn or skip."""
    err = msg.error()
    if err is None:
        return
    if err.fatal():
        raise DeliveryError(f"fatal {client} error: {err.str()}")
    stop_if_refused(err, settings)  # not a record's failure: stop, uncommitted
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("%s error on %s: %s", client, msg.topic(), err.str())
