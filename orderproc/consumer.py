"""The order consumer: decode, handle, persist, route failures, store offsets.

Delivery semantics (at-least-once, nothing lost):

* ``enable.auto.offset.store`` is off. Offsets move only in ``orderproc.offsets``,
  after the batch's processed orders are committed to the database *and* every
  retry/DLQ record of the batch is acknowledged by the broker. librdkafka's
  auto-commit then commits only those stored offsets, on revoke and on close too.
* Redeliveries after a crash are harmless: the processed table is idempotent on
  ``orderId``, and the running average counts only rows that were new.
* If a retry/DLQ record cannot be written, the consumer stops without storing
  that batch's offsets (or any later batch's) rather than drop the order.

Retry modes:

* ``non-blocking`` (default): a failing order goes to ``<prefix>.<attempt>`` with a
  due time; the same consumer reads those topics and pauses a retry partition
  until its head record is due. The main topic never waits, at the price of
  ordering: a retried order is processed after orders that came later.
* ``blocking``: the consumer sleeps the backoff and retries in place. Per
  partition order is kept, but every order behind a failing one waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from orderproc.breaker import FloodBreaker
from orderproc.config import RetryMode, Settings
from orderproc.dlq import Failure
from orderproc.errors import DeliveryError, OrderProcError, ProcessingError
from orderproc.handler import OrderHandler, PriceThresholdHandler
from orderproc.holds import PartitionHolds
from orderproc.metrics import ConsumerMetrics, Health
from orderproc.models import Order, RunningAverage
from orderproc.offsets import OffsetPipeline, PendingBatch
from orderproc.records import TP, Record
from orderproc.retry import RetryPolicy, classify
from orderproc.routing import RETRY_DUE_HEADER, FailureRouter
from orderproc.serde import OrderSerde
from orderproc.store.repository import OrderRepository, ProcessedRow, StoreError
from orderproc.topics import ensure_topics

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ConsumerStats:
    """What one run did; returned by ``OrderConsumer.run``."""

    consumed: int = 0
    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dead_lettered_by_category: dict[str, int] = field(default_factory=dict)
    average_price: float = 0.0
    flood_breaker_trips: int = 0


@dataclass
class _Batch(PendingBatch):
    """One consumed batch while it is handled: its rows and per-topic counts."""

    rows: list[ProcessedRow] = field(default_factory=list)
    consumed: dict[str, int] = field(default_factory=dict)
    ok_since_failure: int = 0


class _Interrupted(Exception):
    """Stop was requested during an in-place (blocking) backoff."""


class OrderConsumer:
    """A long-running consumer of ``orders`` (and its retry topics)."""

    def __init__(
        self,
        settings: Settings,
        repository: OrderRepository,
        *,
        handler: OrderHandler | None = None,
        metrics: ConsumerMetrics | None = None,
        health: Health | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        router: FailureRouter | None = None,
        echo: Callable[[str], None] | None = print,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.handler = handler or PriceThresholdHandler(settings.price_threshold)
        self.policy = RetryPolicy.from_settings(settings)
        self.mode = settings.retry_mode
        self.serde = OrderSerde()
        self.metrics = metrics or ConsumerMetrics()
        self.health = health or Health()
        self.router = router or FailureRouter(settings)
        self.breaker = FloodBreaker(
            settings.flood_window, settings.flood_ratio, settings.flood_cooldown_s
        )
        self.stats = ConsumerStats()
        self.average = RunningAverage(repository.price_totals())
        self._echo = echo
        self._stop = threading.Event()
        self._assigned = False
        self._owned: frozenset[TP] = frozenset()
        self._last_message = time.monotonic()
        self._retry_due = 0.0  # monotonic time the latest scheduled retry is due
        self._retry_topics = {settings.retry_topic(i): i for i in range(1, settings.max_attempts)}
        conf = settings.kafka_config(
            **{
                "group.id": settings.consumer_group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "session.timeout.ms": settings.session_timeout_ms,
                # A resumed retry partition joins the next fetch request: keep them short.
                "fetch.wait.max.ms": settings.fetch_wait_max_ms,
                "partition.assignment.strategy": "cooperative-sticky",
                "statistics.interval.ms": 10000,
                "stats_cb": self.metrics.update_lag_from_stats,
                **(consumer_overrides or {}),
            }
        )
        self.consumer = Consumer(conf)
        self._retried_metric = self.metrics.retried.labels(self.mode.value)
        self._held = PartitionHolds(self.consumer, self.metrics.paused_partitions.set)
        self.offsets = OffsetPipeline(self.consumer, self.router, on_stored=self._on_stored)

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and return (signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def partitions(self) -> frozenset[TP]:
        """The partitions this instance owns now (safe to read from another thread)."""
        return self._owned

    def run(
        self, *, max_messages: int | None = None, idle_exit_s: float | None = None
    ) -> ConsumerStats:
        """Consume until stopped, after ``max_messages`` records, or when idle ``idle_exit_s``.

        Raises:
            DeliveryError: a retry/DLQ record was not acknowledged (its batch not committed).
            StoreError: the database failed and a stop was requested before it recovered.
        """
        ensure_topics(self.settings)
        topics = [self.settings.orders_topic, *self._retry_topics]
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "consuming %s group=%s mode=%s max_attempts=%d",
            ",".join(topics),
            self.settings.consumer_group,
            self.mode.value,
            self.policy.max_attempts,
        )
        self._last_message = time.monotonic()
        try:
            while not self.stopping:
                self.health.beat()
                self._resume_due()
                want = self.settings.batch_size
                if max_messages is not None:
                    want = min(want, max_messages - self.stats.consumed)
                    if want <= 0:
                        break
                messages = self.consumer.consume(want, timeout=self._poll_timeout())
                if not messages:
                    self.offsets.advance()
                    if self._idle_long_enough(idle_exit_s):
                        break
                    continue
                self._last_message = time.monotonic()
                self._commit_batch(self._handle_batch(messages))
            self.offsets.advance(wait=True)
        except OrderProcError as exc:
            self.health.fail(str(exc))
            raise
        finally:
            self._close()
        self.stats.average_price = self.average.overall
        return self.stats

    def _idle_long_enough(self, idle_exit_s: float | None) -> bool:
        if idle_exit_s is None or len(self.offsets):
            return False
        # Idle counts only once we own partitions (a join can wait out a dead member), and
        # not before the last retry we scheduled was due: it is work still to come back.
        since = max(self._last_message, self._retry_due)
        idle = time.monotonic() - since if self._assigned else 0.0
        # Pending retries keep a bounded run alive; a tripped breaker does not.
        pending = bool(self._held) and not self.breaker.is_open
        if idle >= idle_exit_s and not pending:
            log.info("idle for %.1fs, exiting", idle)
            return True
        return False

    def _close(self) -> None:
        # close() commits the offsets stored so far: only durable ones ever are.
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("consumer close: %s", exc)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._owned = self._owned | {(tp.topic, tp.partition) for tp in partitions}
        if partitions and not self._assigned:
            self._assigned = True
            self._last_message = time.monotonic()
        log.info("assigned %s", _fmt(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called from inside consume(): make every handled batch durable, then commit.
        self.offsets.advance(wait=True)
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._owned = self._owned - revoked
        self._held.forget(revoked)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc.args[0].str())
        log.info("revoked %s", _fmt(partitions))

    # -- one batch -----------------------------------------------------------------

    def _handle_batch(self, messages: list[Message]) -> _Batch:
        """Handle a batch; plain records of the main topic take a fast path.

        The fast path (no headers, decodes, handler succeeds) builds no objects
        beyond the order and its row; anything else takes ``_handle_full``.
        """
        batch = _Batch()
        orders_topic = self.settings.orders_topic
        decode, handler, held = self.serde.decode, self.handler, self._held
        rows, offsets, consumed = batch.rows, batch.next_offsets, batch.consumed
        new_row = tuple.__new__  # see Order.from_record: no Python-level __new__ per row
        now = datetime.now(UTC)
        main = ok_run = 0  # main-topic records; successes since the last failure
        for msg in messages:
            if msg.error() is not None:
                self._on_message_error(msg)
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            if held and (topic, partition) in held:
                continue  # held at an earlier offset of this batch; it will be fetched again
            if topic != orders_topic:
                consumed[topic] = consumed.get(topic, 0) + 1
            else:
                main += 1
                order = None
                if msg.headers() is None:
                    try:
                        order = decode(msg.value())
                    except ProcessingError:
                        order = None  # the full path below dead-letters it
                if order is not None:
                    try:
                        handler(order)
                    except Exception as exc:  # the handler is user code: classify anything
                        batch.ok_since_failure += ok_run
                        ok_run = 0
                        if not self._first_attempt_failed(Record.of(msg), batch, order, exc):
                            continue
                    else:
                        rows.append(
                            new_row(ProcessedRow, (
                                order.order_id, order.product, order.price, 1,
                                topic, partition, offset, now, None,
                            ))
                        )  # fmt: skip
                        ok_run += 1
                        offsets[(topic, partition)] = offset + 1
                        continue
                    offsets[(topic, partition)] = offset + 1
                    if self.breaker.is_open:
                        self._hold_all(after=messages, batch=batch)
                        break
                    continue
            batch.ok_since_failure += ok_run
            ok_run = 0
            if not self._handle_full(Record.of(msg), batch):
                continue
            offsets[(topic, partition)] = offset + 1
            if self.breaker.is_open:
                self._hold_all(after=messages, batch=batch)
                break
        consumed[orders_topic] = consumed.get(orders_topic, 0) + main
        batch.ok_since_failure += ok_run
        self._count_successes(batch)
        if messages:
            batch.oldest_timestamp_ms = messages[0].timestamp()[1]
        return batch

    def _handle_full(self, rec: Record, batch: _Batch) -> bool:
        """The slow path: retry topics, records with headers, undecodable values.

        Returns False when the record was held back (not due yet, or interrupted).
        """
        if rec.topic in self._retry_topics and not self._is_due(rec, batch):
            return False
        attempts, first_failure, _ = rec.provenance()
        try:
            order = self.serde.decode(rec.value)
        except ProcessingError as error:
            failure = self._failure(rec, error, attempts + 1, first_failure, None)
            self._dead_letter(rec, batch, failure)
            return True
        try:
            self._attempt(rec, batch, order, attempts, first_failure)
        except _Interrupted:
            self._hold(rec, until=time.monotonic())
            return False
        return True

    def _first_attempt_failed(
        self, rec: Record, batch: _Batch, order: Order, exc: Exception
    ) -> bool:
        """Route a fast-path failure; False when the record was held back (interrupted)."""
        first_failure = now_ms()
        try:
            if self._after_failure(rec, batch, order, classify(exc), 0, first_failure):
                self._attempt(rec, batch, order, 1, first_failure)
        except _Interrupted:
            self._hold(rec, until=time.monotonic())
            return False
        return True

    def _attempt(
        self, rec: Record, batch: _Batch, order: Order, attempts: int, first_failure: int | None
    ) -> None:
        """Run the handler (again, in blocking mode) and route the outcome."""
        while True:
            try:
                self.handler(order)
            except Exception as exc:  # the handler is user code: classify anything
                first_failure = first_failure or now_ms()
                if self._after_failure(rec, batch, order, classify(exc), attempts, first_failure):
                    attempts += 1
                    continue
                return
            _, _, source = rec.provenance()
            batch.rows.append(
                ProcessedRow(
                    order.order_id, order.product, order.price, attempts + 1,
                    source.topic, source.partition, source.offset,
                    datetime.now(UTC), rec.replay_id,
                )
            )  # fmt: skip
            if rec.topic == self.settings.orders_topic:
                batch.ok_since_failure += 1
            return

    def _after_failure(
        self,
        rec: Record,
        batch: _Batch,
        order: Order,
        error: ProcessingError,
        attempts_before: int,
        first_failure: int | None,
    ) -> bool:
        """Route a failed attempt; True when the caller should retry in place (blocking)."""
        attempts = attempts_before + 1
        failure = self._failure(rec, error, attempts, first_failure, order)
        if not self.policy.should_retry(error, attempts):
            self._dead_letter(rec, batch, failure)
            return False
        if self._echo is not None:
            self._echo(f"Attempt {attempts}/{self.policy.max_attempts} failed: {error}")
        self.stats.retried += 1
        self._retried_metric.inc()
        if self.mode is RetryMode.BLOCKING:
            if self._stop.wait(self.policy.delay(attempts)):
                raise _Interrupted
            return True
        delay = self.policy.delay(attempts)
        topic = self.settings.retry_topic(attempts)
        due = now_ms() + int(delay * 1000)
        self._retry_due = max(self._retry_due, time.monotonic() + delay)
        self.router.to_retry(failure, topic, due, rec.headers, batch.expect_delivery())
        self._record_outcome(rec, batch, ok=False)
        return False

    def _failure(
        self,
        rec: Record,
        error: ProcessingError,
        attempts: int,
        first_failure_ms: int | None,
        order: Order | None,
    ) -> Failure:
        _, _, source = rec.provenance()
        now = now_ms()
        return Failure(
            error=error,
            attempts=attempts,
            first_failure_ms=first_failure_ms or now,
            last_failure_ms=now,
            source=source,
            consumer_group=self.settings.consumer_group,
            order=order,
            raw_value=rec.value,
            key=rec.key,
        )

    def _dead_letter(self, rec: Record, batch: _Batch, failure: Failure) -> None:
        self.router.to_dlq(
            failure, rec.headers, now_ms=now_ms(), on_delivery=batch.expect_delivery()
        )
        category = failure.category.value
        self.stats.dead_lettered += 1
        by_category = self.stats.dead_lettered_by_category
        by_category[category] = by_category.get(category, 0) + 1
        self.metrics.dead_lettered.labels(category).inc()
        if self._echo is not None:
            key = failure.order.order_id if failure.order else f"{rec.topic}@{rec.offset}"
            self._echo(f"DLQ: {key} -> {failure.reason}")
        self._record_outcome(rec, batch, ok=False)

    # -- the flood breaker ----------------------------------------------------------

    def _count_successes(self, batch: _Batch) -> None:
        if batch.ok_since_failure:
            self.breaker.record_many(False, batch.ok_since_failure)
            batch.ok_since_failure = 0

    def _record_outcome(self, rec: Record, batch: _Batch, *, ok: bool) -> None:
        """Feed the flood breaker with records of the main topic only.

        A record counts as failed when it did not succeed on its first read
        (dead-lettered, or sent to a retry topic). Retry-topic records are left
        out: after a restart their backlog fails in a burst by design.
        """
        if rec.topic != self.settings.orders_topic:
            return
        self._count_successes(batch)
        if self.breaker.record(not ok):
            self.stats.flood_breaker_trips += 1
            self.metrics.flood_trips.inc()
            self.metrics.flood_open.set(1)
            log.critical(
                "flood breaker tripped: %.0f%% of the last %d orders failed; "
                "pausing consumption for %.0fs",
                self.breaker.dead_share * 100,
                self.breaker.window,
                self.breaker.cooldown_s,
            )

    # -- making a batch durable ----------------------------------------------------

    def _commit_batch(self, batch: _Batch) -> None:
        new_ids = self._persist(batch.rows)
        self._report_processed(batch.rows, new_ids)
        for topic, n in batch.consumed.items():
            self.stats.consumed += n
            self.metrics.consumed.labels(topic).inc(n)
        self.offsets.submit(batch)

    def _report_processed(self, rows: list[ProcessedRow], new_ids: set[str]) -> None:
        if self._echo is None and len(new_ids) == len(rows):  # no lines, no redeliveries
            self.average.add_rows(rows)
            self.stats.processed += len(rows)
            self.metrics.processed.inc(len(rows))
            self.metrics.running_average.set(self.average.overall)
            return
        processed = 0
        for row in rows:
            if row.order_id not in new_ids:  # already stored: a redelivery
                self.stats.duplicates += 1
                self.metrics.duplicates.inc()
                continue
            new_ids.discard(row.order_id)
            self.average.add(row.product, row.price)
            processed += 1
            if self._echo is not None:
                avg = self.average.overall
                self._echo(f"Processed {row.order_id} | price={row.price:.2f} | avg={avg:.2f}")
        self.stats.processed += processed
        self.metrics.processed.inc(processed)
        self.metrics.running_average.set(self.average.overall)

    def _on_stored(self, batch: PendingBatch) -> None:
        if batch.oldest_timestamp_ms and batch.oldest_timestamp_ms > 0:
            self.metrics.record_latency.observe(
                max(0.0, time.time() - batch.oldest_timestamp_ms / 1000)
            )

    def _persist(self, rows: list[ProcessedRow]) -> set[str]:
        delay = 0.5
        while True:
            try:
                return self.repository.record_processed(rows)
            except StoreError as exc:
                # The database is down, not the orders: wait for it instead of dead-lettering.
                log.error("%s; retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    # -- pausing: retry delays and the flood breaker --------------------------------

    def _is_due(self, rec: Record, batch: _Batch) -> bool:
        due_ms = rec.header_int(RETRY_DUE_HEADER)
        wait_s = 0.0 if due_ms is None else (due_ms - now_ms()) / 1000
        if wait_s <= 0:
            return True
        batch.consumed[rec.topic] -= 1  # it will be read again when due
        self._hold(rec, until=time.monotonic() + wait_s)
        return False

    def _hold(self, rec: Record, *, until: float) -> None:
        """Pause the record's partition and rewind to it, so it is the next one read."""
        self._held.hold(rec.topic, rec.partition, rec.offset, until=until)

    def _hold_all(self, *, after: list[Message], batch: _Batch) -> None:
        """Breaker tripped: rewind every partition to its first unhandled record and pause all."""
        until = time.monotonic() + self.breaker.cooldown_s
        for msg in after:
            if msg.error() is not None:
                continue
            rec = Record.of(msg)
            unhandled = rec.offset >= batch.next_offsets.get(rec.tp, -1)
            if rec.tp not in self._held and unhandled:
                self._hold(rec, until=until)
        self._held.pause_rest(self.consumer.assignment(), until=until)

    def _resume_due(self) -> None:
        if self.breaker.is_open:
            if not self.breaker.ready_to_close():
                return
            log.warning("flood breaker cooldown over; resuming consumption")
            self.breaker.reset()
            self.metrics.flood_open.set(0)
        self._held.resume_due()

    def _poll_timeout(self) -> float:
        timeout = self.settings.poll_timeout_s
        due_in = self._held.next_due_in()
        if due_in is not None and not self.breaker.is_open:
            timeout = min(timeout, max(0.01, due_in))
        return timeout

    def _on_message_error(self, msg: Message) -> None:
        err = msg.error()
        if err is None:
            return
        if err.fatal():
            raise DeliveryError(f"fatal consumer error: {err.str()}")
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error on %s: %s", msg.topic(), err.str())


def _fmt(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
