"""The order consumer's loop: poll, decide per record, act, make the batch durable, store offsets.

Delivery semantics (``docs/reliability.md``): offsets move only in
``orderproc.worker.offsets``, after the batch's processed orders are committed to the
database (an idempotent write: a redelivery is ignored) and its retry/DLQ records are
acknowledged (at least once) or committed with them in one Kafka transaction (exactly
once). A retry/DLQ record that cannot be written stops the consumer with nothing of its
batch committed.

Retry modes (the decision itself is ``orderproc.worker.decide``):

* ``non-blocking`` (default): a failing order goes to ``<prefix>.<attempt>`` with a
  due time; the same consumer reads those topics and pauses a retry partition
  until its head record is due. The main topic never waits, at the price of
  ordering: a retried order is processed after orders that came later.
* ``blocking``: a failing order is retried in place. Its partition is paused and
  rewound to it for the backoff while the loop keeps polling (so the member is
  never evicted for exceeding ``max.poll.interval.ms``) and everything handled
  before it is committed; the retry state is kept in memory. Per partition order
  is kept, but every order behind a failing one waits. After a restart the
  waiting order starts its attempts over.

No record stops the stream: an exception that escapes the decision for one
record dead-letters that record (category ``internal``); a row the database
refuses is dead-lettered (the other rows are stored); only the infrastructure
(broker, database, a DLQ that refuses everything) stops or pauses the consumer.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from orderproc.config import Settings
from orderproc.errors import OrderProcError
from orderproc.kafka.access import check_settings, consumer_access
from orderproc.kafka.clients import PRODUCER_MAX_MESSAGE_BYTES, order_consumer_config
from orderproc.kafka.topics import ensure_topics, max_message_bytes
from orderproc.metrics import ConsumerMetrics, Health
from orderproc.records import TP
from orderproc.serde import OrderSerde
from orderproc.store.processed import OrderRepository
from orderproc.worker.batch import Batch, BatchHandler
from orderproc.worker.breaker import FloodBreaker, FloodGuard
from orderproc.worker.brokers import BrokerWait
from orderproc.worker.decide import Decider
from orderproc.worker.handler import OrderHandler, PriceThresholdHandler
from orderproc.worker.holds import PartitionHolds
from orderproc.worker.offsets import BatchAborted, PendingBatch, offsets_for
from orderproc.worker.outcomes import ConsumerStats
from orderproc.worker.routing import FailureRouter
from orderproc.worker.sink import ProcessedSink

log = logging.getLogger(__name__)


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
        crash: Callable[[str], None] | None = None,
        serde: OrderSerde | None = None,
    ) -> None:
        self.settings = settings
        # A test seam: called at ``handled``, ``stored`` and ``committed`` for each batch.
        self._crash = crash or (lambda _point: None)
        self.repository = repository
        self.decider = Decider.from_settings(  # serde: the settings' wire format by default
            settings, handler or PriceThresholdHandler(settings.price_threshold), serde=serde
        )
        self.metrics = metrics or ConsumerMetrics(
            group=settings.consumer_group, retry_topics=settings.retry_topics
        )
        self.health = health or Health()
        self.router = router or FailureRouter(settings)
        self.flood = FloodGuard(
            FloodBreaker(settings.flood_window, settings.flood_ratio, settings.flood_cooldown_s),
            self.metrics,
        )
        self.stats = ConsumerStats()
        self._echo = echo
        self._stop = threading.Event()
        self.sink = ProcessedSink(
            repository, self.metrics, self._stop, echo, settings.consumer_group
        )
        self._assigned = False
        self._owned: frozenset[TP] = frozenset()
        self._last_message = time.monotonic()
        self._lag_ticks = 0  # statistics payloads whose paused partitions' lag was refreshed
        # Told of every offset commit: failing ones for a while mean the brokers do not answer.
        self.brokers = BrokerWait()
        conf = order_consumer_config(
            settings,
            stats_cb=self.metrics.update_lag_from_stats,
            on_commit=self.brokers.committed,
            **(consumer_overrides or {}),
        )
        self.consumer = Consumer(conf)
        self.offsets = offsets_for(
            settings, self.consumer, self.router, self._on_stored, self.brokers
        )
        self.holds = PartitionHolds(self.consumer, self.offsets, self.metrics.paused_partitions.set)
        self.batches = BatchHandler(settings, self.decider, self.router, self.holds, self.flood,
                                    self.consumer, self.stats, self.metrics, echo)  # fmt: skip

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
            BrokerError: Kafka refuses the credentials, the certificate or an ACL
                (checked first; a refusal met later stops it too, uncommitted).
            DeliveryError: a retry/DLQ record was not acknowledged (its batch not committed).
            StoreError: the database failed and a stop was requested before it recovered.
        """
        check_settings(self.settings, consumer_access(self.settings))
        ensure_topics(self.settings)
        self.router.max_record_bytes = max_message_bytes(
            self.settings, self.settings.dlq_topic, PRODUCER_MAX_MESSAGE_BYTES
        )
        topics = [self.settings.orders_topic, *self.settings.retry_topics]
        self.offsets.start()
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "consuming %s group=%s mode=%s max_attempts=%d guarantee=%s",
            ",".join(topics),
            self.settings.consumer_group,
            self.settings.retry_mode.value,
            self.settings.max_attempts,
            self.settings.processing_guarantee.value,
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
                if self.metrics.lag.ticks != self._lag_ticks:
                    self._refresh_paused_lag()
                if not messages:
                    self.offsets.advance()
                    if self._idle_long_enough(idle_exit_s):
                        break
                    continue
                self._last_message = time.monotonic()
                started = time.perf_counter()
                self.offsets.begin()
                self._make_durable(self.batches.handle(messages))
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.offsets.advance(wait=True)
            self.brokers.finish()
        except OrderProcError as exc:
            self.health.fail(str(exc))
            raise
        finally:
            self._close()
        self.stats.average_price = self.sink.average.overall
        return self.stats

    def _idle_long_enough(self, idle_exit_s: float | None) -> bool:
        if idle_exit_s is None or len(self.offsets):
            return False
        # Idle counts only once we own partitions (a join can wait out a dead member), and
        # not before the last retry we scheduled was due: it is work still to come back.
        since = max(self._last_message, self.batches.retry_due)
        idle = time.monotonic() - since if self._assigned else 0.0
        # Pending retries keep a bounded run alive; a tripped breaker does not.
        pending = bool(self.holds) and not self.flood.is_open
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

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.offsets.commit_on_revoke(partitions)
        self._owned = self._owned - revoked
        self.holds.forget(revoked)
        self.batches.outage.forget(revoked)
        for tp in revoked:
            self.batches.in_place.pop(tp, None)
        log.info("revoked %s", _fmt(partitions))

    # -- making a batch durable ----------------------------------------------------

    def _make_durable(self, batch: Batch) -> None:
        self._crash("handled")
        refused = functools.partial(self.batches.dead_letter, batch=batch)
        self.batches.outcomes.store(self.sink, batch.rows, batch.records, refused)
        self._crash("stored")
        try:
            self.offsets.submit(batch)
        except BatchAborted:
            self._read_again(batch)
            return
        self._crash("committed")
        for topic, n in batch.consumed.items():
            self.stats.consumed += n
            self.metrics.consumed.labels(topic).inc(n)

    def _read_again(self, batch: Batch) -> None:
        """The batch's transaction aborted: rewind its partitions to where it began (those
        still ours: a partition revoked meanwhile is read by its next owner from the
        committed offset, which this batch never moved)."""
        for (topic, partition), offset in batch.first_offsets().items():
            if (topic, partition) not in self._owned:
                continue
            self.holds.release((topic, partition))
            self.batches.in_place.pop((topic, partition), None)
            self.offsets.rewind(topic, partition, offset)

    def _on_stored(self, batch: PendingBatch) -> None:
        if batch.oldest_timestamp_ms and batch.oldest_timestamp_ms > 0:
            self.metrics.record_latency.observe(
                max(0.0, time.time() - batch.oldest_timestamp_ms / 1000)
            )

    # -- pausing: retry delays and the flood breaker --------------------------------

    def _refresh_paused_lag(self) -> None:
        """Paused partitions are not fetched, so librdkafka's statistics keep their end
        offset from before the pause (``orderproc.metrics.lag``): ask for it, once per
        statistics payload, only for them."""
        self._lag_ticks = self.metrics.lag.ticks
        for topic, partition in list(self.holds.paused):
            try:
                _, end = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1.0, cached=False
                )
            except KafkaException as exc:
                log.debug("end offset of paused %s[%d]: %s", topic, partition, exc)
                continue
            self.metrics.lag.set_end((topic, partition), end)

    def _resume_due(self) -> None:
        if self.flood.may_consume():
            self.holds.resume_due()

    def _poll_timeout(self) -> float:
        timeout = self.settings.poll_timeout_s
        due_in = self.holds.next_due_in()
        if due_in is not None and not self.flood.is_open:
            timeout = min(timeout, max(0.01, due_in))
        return timeout


def _fmt(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
