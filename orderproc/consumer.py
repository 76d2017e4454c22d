"""The order consumer: decode, handle, persist, route failures, store offsets.

Delivery semantics (at-least-once, nothing lost):

* ``enable.auto.offset.store`` is off. Offsets move only in ``_store_offsets``,
  after the batch's processed orders are committed to the database *and* every
  retry/DLQ record of the batch is acknowledged by the broker. librdkafka's
  auto-commit then commits only those stored offsets, on revoke and on close too.
* Redeliveries after a crash are harmless: the processed table is idempotent on
  ``orderId``, and the running average counts only rows that were new.
* If a retry/DLQ record cannot be written, the consumer stops without storing
  the batch's offsets rather than drop the order.

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
from orderproc.dlq import Failure, Header, header_map, normalize_headers
from orderproc.errors import DeliveryError, OrderProcError, PermanentError, ProcessingError
from orderproc.handler import OrderHandler, PriceThresholdHandler
from orderproc.metrics import ConsumerMetrics, Health
from orderproc.models import Order, RunningAverage, Source
from orderproc.retry import RetryPolicy, classify
from orderproc.routing import RETRY_DUE_HEADER, FailureRouter
from orderproc.serde import OrderSerde
from orderproc.store.repository import OrderRepository, ProcessedRow, StoreError
from orderproc.topics import ensure_topics

log = logging.getLogger(__name__)

TP = tuple[str, int]

REPLAY_ID_HEADER = "replay.id"
"""Set by the replay DAG; kept across retry/DLQ hops like any header that is not ours."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Record:
    """The parts of a Kafka message the consumer uses, with the Optionals resolved."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp_ms: int | None

    @classmethod
    def of(cls, msg: Message) -> Record:
        kind, ts = msg.timestamp()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=normalize_headers(msg.headers()),
            timestamp_ms=int(ts) if kind and ts > 0 else None,
        )

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


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
class _Batch:
    """Outcome of handling one batch, before it is made durable."""

    rows: list[ProcessedRow] = field(default_factory=list)
    next_offsets: dict[TP, int] = field(default_factory=dict)
    timestamps_ms: list[int] = field(default_factory=list)


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
        self._last_message = time.monotonic()
        self._held: dict[TP, float] = {}  # paused partition -> monotonic time it may resume
        self._retry_topics = {settings.retry_topic(i): i for i in range(1, settings.max_attempts)}
        conf = settings.kafka_config(
            **{
                "group.id": settings.consumer_group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "session.timeout.ms": settings.session_timeout_ms,
                "partition.assignment.strategy": "cooperative-sticky",
                "statistics.interval.ms": 10000,
                "stats_cb": self.metrics.update_lag_from_stats,
                **(consumer_overrides or {}),
            }
        )
        self.consumer = Consumer(conf)

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and return (signal-safe)."""
        self._stop.set()

    @property
    def has_partitions(self) -> bool:
        """True once the group has given this instance partitions."""
        return self._assigned

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(
        self, *, max_messages: int | None = None, idle_exit_s: float | None = None
    ) -> ConsumerStats:
        """Consume until stopped, after ``max_messages`` records, or when idle ``idle_exit_s``.

        Raises:
            DeliveryError: a retry/DLQ record was not acknowledged (nothing of its batch committed).
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
                self.router.poll()
                if not messages:
                    idle = time.monotonic() - self._last_message
                    # Pending retries keep a bounded run alive; a tripped breaker does not.
                    pending = bool(self._held) and not self.breaker.is_open
                    # Idle counts only once we own partitions: a join can wait out a dead member.
                    idle = idle if self._assigned else 0.0
                    if idle_exit_s is not None and idle >= idle_exit_s and not pending:
                        log.info("idle for %.1fs, exiting", idle)
                        break
                    continue
                self._last_message = time.monotonic()
                self._commit_batch(self._handle_batch(messages))
        except OrderProcError as exc:
            self.health.fail(str(exc))
            raise
        finally:
            self._close()
        self.stats.average_price = self.average.overall
        return self.stats

    def _close(self) -> None:
        # close() commits the offsets stored so far: only durable ones ever are.
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("consumer close: %s", exc)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and not self._assigned:
            self._assigned = True
            self._last_message = time.monotonic()
        log.info("assigned %s", _fmt(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called from inside consume(): every batch handled so far has its offsets stored.
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)
        self.metrics.paused_partitions.set(len(self._held))
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc.args[0].str())
        log.info("revoked %s", _fmt(partitions))

    # -- one batch -----------------------------------------------------------------

    def _handle_batch(self, messages: list[Message]) -> _Batch:
        batch = _Batch()
        records: list[Record] = []
        for msg in messages:
            if msg.error() is not None:
                self._on_message_error(msg)
            else:
                records.append(Record.of(msg))
        for rec in records:
            if rec.tp in self._held:
                continue  # held at an earlier offset of this batch; it will be fetched again
            self.stats.consumed += 1
            self.metrics.consumed.labels(rec.topic).inc()
            if not self._is_due(rec):
                continue
            try:
                self._handle(rec, batch)
            except _Interrupted:
                self._hold(rec, until=time.monotonic())
                continue
            batch.next_offsets[rec.tp] = rec.offset + 1
            if rec.timestamp_ms:
                batch.timestamps_ms.append(rec.timestamp_ms)
            if self.breaker.is_open:
                self._hold_all(after=records, batch=batch)
                break
        return batch

    def _handle(self, msg: Record, batch: _Batch) -> None:
        meta = header_map(msg.headers) if msg.topic in self._retry_topics else {}
        attempts = int(meta.get("attempts", 0))
        first_failure = int(meta["first.failure.ms"]) if "first.failure.ms" in meta else None
        source = _source_from(meta) or Source(
            msg.topic, msg.partition, msg.offset, msg.timestamp_ms
        )
        order: Order | None = None
        try:
            order = self.serde.decode(msg.value)
            while True:
                attempts += 1
                try:
                    self.handler(order)
                    break
                except Exception as exc:  # the handler is user code: classify anything
                    error = classify(exc)
                    first_failure = first_failure or now_ms()
                    if not self.policy.should_retry(error, attempts):
                        raise error from exc
                    self._say(f"Attempt {attempts}/{self.policy.max_attempts} failed: {error}")
                    failure = self._failure(msg, error, attempts, first_failure, source, order)
                    if self.mode is RetryMode.BLOCKING:
                        self._backoff_in_place(attempts)
                        continue
                    self._schedule_retry(msg, failure)
                    self._record_outcome(msg, ok=False)
                    return
        except ProcessingError as error:
            attempts = max(attempts, 1)
            failure = self._failure(msg, error, attempts, first_failure or now_ms(), source, order)
            self._dead_letter(msg, failure)
            self._record_outcome(msg, ok=False)
            return
        batch.rows.append(
            ProcessedRow(
                order_id=order.order_id,
                product=order.product,
                price=order.price,
                attempts=attempts,
                source_topic=source.topic,
                source_partition=source.partition,
                source_offset=source.offset,
                processed_at=datetime.now(UTC),
                replay_id=_replay_id(msg.headers),
            )
        )
        self._record_outcome(msg, ok=True)

    def _failure(
        self,
        msg: Record,
        error: ProcessingError,
        attempts: int,
        first_failure_ms: int,
        source: Source,
        order: Order | None,
    ) -> Failure:
        return Failure(
            error=error,
            attempts=attempts,
            first_failure_ms=first_failure_ms,
            last_failure_ms=now_ms(),
            source=source,
            consumer_group=self.settings.consumer_group,
            order=order,
            raw_value=msg.value,
            key=msg.key,
        )

    def _schedule_retry(self, msg: Record, failure: Failure) -> None:
        delay = self.policy.delay(failure.attempts)
        topic = self.settings.retry_topic(failure.attempts)
        self.router.to_retry(failure, topic, now_ms() + int(delay * 1000), msg.headers)
        self.stats.retried += 1
        self.metrics.retried.labels(self.mode.value).inc()
        log.debug("retry scheduled topic=%s delay_s=%.2f", topic, delay)

    def _backoff_in_place(self, failed_attempt: int) -> None:
        self.stats.retried += 1
        self.metrics.retried.labels(self.mode.value).inc()
        if self._stop.wait(self.policy.delay(failed_attempt)):
            raise _Interrupted

    def _dead_letter(self, msg: Record, failure: Failure) -> None:
        self.router.to_dlq(failure, msg.headers, now_ms=now_ms())
        category = failure.category.value
        self.stats.dead_lettered += 1
        self.stats.dead_lettered_by_category[category] = (
            self.stats.dead_lettered_by_category.get(category, 0) + 1
        )
        self.metrics.dead_lettered.labels(category).inc()
        key = failure.order.order_id if failure.order else f"{msg.topic}@{msg.offset}"
        self._say(f"DLQ: {key} -> {failure.reason}")

    def _record_outcome(self, rec: Record, ok: bool) -> None:
        """Feed the flood breaker with records of the main topic only.

        A record counts as failed when it did not succeed on its first read
        (dead-lettered, or sent to a retry topic). Retry-topic records are left
        out: after a restart their backlog fails in a burst by design.
        """
        if rec.topic != self.settings.orders_topic:
            return
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

    # -- making a batch durable: the one place offsets move ------------------------

    def _commit_batch(self, batch: _Batch) -> None:
        new_ids = self._persist(batch.rows)
        self.router.flush()  # raises DeliveryError: then no offset of this batch is stored
        self._store_offsets(batch)
        for row in batch.rows:
            if row.order_id not in new_ids:  # already stored: a redelivery
                self.stats.duplicates += 1
                self.metrics.duplicates.inc()
                continue
            new_ids.discard(row.order_id)
            self.average.add(row.product, row.price)
            self.stats.processed += 1
            self.metrics.processed.inc()
            self._say(
                f"Processed {row.order_id} | price={row.price:.2f} | avg={self.average.overall:.2f}"
            )
        self.metrics.running_average.set(self.average.overall)

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

    def _store_offsets(self, batch: _Batch) -> None:
        if not batch.next_offsets:
            return
        # Safe: the rows are committed and the retry/DLQ records acknowledged.
        self.consumer.store_offsets(
            offsets=[TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
        )
        done = time.time()
        for ts in batch.timestamps_ms:
            self.metrics.record_latency.observe(max(0.0, done - ts / 1000))

    # -- pausing: retry delays and the flood breaker --------------------------------

    def _is_due(self, rec: Record) -> bool:
        if rec.topic not in self._retry_topics:
            return True
        due_ms = _header_int(rec.headers, RETRY_DUE_HEADER)
        wait_s = 0.0 if due_ms is None else (due_ms - now_ms()) / 1000
        if wait_s <= 0:
            return True
        self.stats.consumed -= 1  # it will be read again when due
        self._hold(rec, until=time.monotonic() + wait_s)
        return False

    def _hold(self, rec: Record, *, until: float) -> None:
        """Pause the record's partition and rewind to it, so it is the next one read."""
        tp = TopicPartition(rec.topic, rec.partition, rec.offset)
        self.consumer.pause([tp])
        self.consumer.seek(tp)
        self._held[rec.tp] = until
        self.metrics.paused_partitions.set(len(self._held))

    def _hold_all(self, *, after: list[Record], batch: _Batch) -> None:
        """Breaker tripped: rewind every partition to its first unhandled record and pause all."""
        until = time.monotonic() + self.breaker.cooldown_s
        for rec in after:
            unhandled = rec.offset >= batch.next_offsets.get(rec.tp, -1)
            if rec.tp not in self._held and unhandled:
                self._hold(rec, until=until)
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key not in self._held:
                self.consumer.pause([tp])
                self._held[key] = until
        self.metrics.paused_partitions.set(len(self._held))

    def _resume_due(self) -> None:
        if self.breaker.is_open:
            if not self.breaker.ready_to_close():
                return
            log.warning("flood breaker cooldown over; resuming consumption")
            self.breaker.reset()
            self.metrics.flood_open.set(0)
        now = time.monotonic()
        due = [tp for tp, until in self._held.items() if until <= now]
        if due:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._held[tp]
            self.metrics.paused_partitions.set(len(self._held))

    def _poll_timeout(self) -> float:
        timeout = self.settings.poll_timeout_s
        if self._held and not self.breaker.is_open:
            timeout = min(timeout, max(0.01, min(self._held.values()) - time.monotonic()))
        return timeout

    def _on_message_error(self, msg: Message) -> None:
        err = msg.error()
        if err is None:
            return
        if err.fatal():
            raise DeliveryError(f"fatal consumer error: {err.str()}")
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error on %s: %s", msg.topic(), err.str())

    def _say(self, line: str) -> None:
        if self._echo is not None:
            self._echo(line)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"


def _header_int(headers: list[Header], name: str) -> int | None:
    for key, value in headers or ():
        if key == name and value:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _source_from(meta: dict[str, str]) -> Source | None:
    try:
        return Source(
            meta["source.topic"],
            int(meta["source.partition"]),
            int(meta["source.offset"]),
            int(meta["source.timestamp.ms"]) if meta.get("source.timestamp.ms") else None,
        )
    except (KeyError, ValueError):
        return None


def _replay_id(headers: list[Header]) -> str | None:
    for key, value in headers:
        if key == REPLAY_ID_HEADER and value:
            return value.decode("utf-8", "replace")
    return None


__all__ = ["ConsumerStats", "OrderConsumer", "PermanentError"]
