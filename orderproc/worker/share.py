"""Queue mode: orders from a share group (KIP-932), each record acknowledged on its own.

A share group hands the records of a partition out one by one to any number of
members, each *acquired* under a lock (``group.share.record.lock.duration.ms``, 30 s by
default) until it is acknowledged. So more consumers than partitions all work, and a
failing order holds up no partition: the records behind it go to the other members.

What each outcome becomes (the decision is ``orderproc.worker.decide``, unchanged):

* processed: stored, then ACCEPT.
* a retryable failure: RELEASE after its backoff; the broker hands it out again (maybe
  to another member) and counts the delivery, so the delivery count is the attempt
  number. The member holding it serves the backoff and polls nothing meanwhile (the
  client allows no poll while a record is unacknowledged); its poll's other records
  are stored and acknowledged first, and the process polls its other members
  (``share_members``, 1 by default; ``orderproc.worker.share_members``). A poll's
  failing records are released together, once the longest of their backoffs is over.
* a permanent failure, or a failure on delivery ``max_attempts``: our dead letter to
  the DLQ (the classic consumer's envelope and headers, plus ``delivery_count``),
  awaited, then ACCEPT. A DLQ that refuses it: everything of the poll not yet
  acknowledged is RELEASEd and the consumer stops with a ``DeliveryError``.

The group's ``share.delivery.count.limit`` is ``max_attempts`` plus ``CRASH_HEADROOM``
(``orderproc.kafka.share_groups``):
a member killed while it holds records costs them a delivery, and a record past the
limit is archived by the broker, never to be seen again. A record whose deliveries
were spent by crashes, not failures, is still dead-lettered on its first failure past
``max_attempts``, never archived unseen. ``share.auto.offset.reset=earliest`` (orders
written before the group's first member are read) and ``share.isolation.level=
read_committed`` (a replay's aborted transaction is never read) are set on the group too.

At least once: a member that dies between the store commit and the acknowledgement
leaves its records to be redelivered; the store's idempotent write ignores the copy,
and a dead letter may be written twice (the drain counts copies).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import AcknowledgeType, Message, Messages
from prometheus_client import Gauge, Histogram

from orderproc.clock import now_ms
from orderproc.config import Settings
from orderproc.dlq.envelope import Failure
from orderproc.errors import DeliveryError, OrderProcError
from orderproc.kafka.access import check_settings, consumer_access
from orderproc.kafka.clients import PRODUCER_MAX_MESSAGE_BYTES, share_consumer_config
from orderproc.kafka.share_groups import MAX_DELIVERY_LIMIT, configure_share_group
from orderproc.kafka.topics import ensure_topics, max_message_bytes
from orderproc.metrics import ConsumerMetrics, Health, ReplayOutcome
from orderproc.records import Record
from orderproc.serde import OrderSerde
from orderproc.store.processed import OrderRepository, ProcessedRow
from orderproc.worker.decide import (
    DeadLetter,
    Decider,
    NotDue,
    Processed,
    RegistryDown,
    RetryInPlace,
    RetryLater,
)
from orderproc.worker.handler import OrderHandler, PriceThresholdHandler
from orderproc.worker.offsets import PendingBatch
from orderproc.worker.outcomes import ConsumerStats, Outcomes, on_message_error
from orderproc.worker.routing import FailureRouter
from orderproc.worker.share_members import Member, Members
from orderproc.worker.sink import ProcessedSink

log = logging.getLogger(__name__)

ACCEPT, RELEASE = AcknowledgeType.ACCEPT, AcknowledgeType.RELEASE

JOIN_GRACE_S = 10.0
"""Idle time that does not count after subscribing: a new member gets its first records
with its second heartbeat (the broker's ``group.share.heartbeat.interval.ms``, 5 s; the
first records came 5.0-5.1 s after ``subscribe`` here), and the client says nothing of
its assignment."""


@dataclasses.dataclass
class _Poll:
    """One poll's records while they are handled, and what each one becomes."""

    now_ms: int
    now: datetime
    dead: PendingBatch = dataclasses.field(default_factory=PendingBatch)
    rows: list[ProcessedRow] = dataclasses.field(default_factory=list)
    records: list[Record] = dataclasses.field(default_factory=list)
    accept: list[Message] = dataclasses.field(default_factory=list)
    retry: list[tuple[float, Message]] = dataclasses.field(default_factory=list)


class ShareOrderConsumer:
    """A long-running consumer of ``orders`` in a share group (``--group-type share``)."""

    def __init__(
        self,
        settings: Settings,
        repository: OrderRepository,
        *,
        handler: OrderHandler | None = None,
        metrics: ConsumerMetrics | None = None,
        health: Health | None = None,
        router: FailureRouter | None = None,
        echo: Callable[[str], None] | None = print,
        serde: OrderSerde | None = None,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.decider = Decider.from_settings(
            settings, handler or PriceThresholdHandler(settings.price_threshold), serde=serde
        )
        self.policy = self.decider.policy
        self.metrics = metrics or ConsumerMetrics(group=settings.consumer_group, retry_topics=[])
        self.health = health or Health()
        self.router = router or FailureRouter(settings)
        self.stats = ConsumerStats()
        self._echo = echo
        self._stop = threading.Event()
        self.sink = ProcessedSink(
            repository, self.metrics, self._stop, echo, settings.consumer_group
        )
        self.outcomes = Outcomes(
            settings, self.router, self.stats, self.metrics, echo, retry_mode="redelivery"
        )
        registry = self.metrics.registry
        self._in_flight = Gauge(
            "orderproc_share_records_in_flight",
            "Records this process's share group members hold (acquired, not acknowledged)",
            registry=registry,
        )
        self._deliveries = Histogram(
            "orderproc_share_delivery_count",
            "The broker's delivery count of each record handled (1: first delivery)",
            buckets=tuple(range(1, MAX_DELIVERY_LIMIT + 1)),
            registry=registry,
        )
        self.members = Members(
            share_consumer_config(settings, **(consumer_overrides or {})),
            settings.share_members,
            poll_timeout_s=settings.poll_timeout_s,
            commit_timeout_s=settings.admin_timeout_s,
        )
        self._last_message = time.monotonic()
        self._joined_by = 0.0

    def stop(self) -> None:
        """Finish the poll in hand (a backoff being served is cut short), then close."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(
        self, *, max_messages: int | None = None, idle_exit_s: float | None = None
    ) -> ConsumerStats:
        """Consume until stopped, after ``max_messages`` records, or when idle ``idle_exit_s``.

        Raises:
            BrokerError: Kafka refuses us, or the cluster has no share groups.
            DeliveryError: a dead letter was not acknowledged (nothing of its poll accepted).
            StoreError: the database failed and a stop was requested before it recovered.
        """
        settings = self.settings
        check_settings(settings, consumer_access(settings))
        ensure_topics(settings)
        configure_share_group(settings, self.policy.longest_delay())
        self.router.max_record_bytes = max_message_bytes(
            settings, settings.dlq_topic, PRODUCER_MAX_MESSAGE_BYTES
        )
        self.members.subscribe(settings.orders_topic)
        self._joined_by = time.monotonic() + JOIN_GRACE_S
        log.info("consuming %s share group=%s members=%d max_attempts=%d (retries by "
                 "redelivery)", settings.orders_topic, settings.consumer_group,
                 len(self.members.all), settings.max_attempts)  # fmt: skip
        self._last_message = time.monotonic()
        try:
            while not self.stopping:
                self.health.beat()
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
                self.members.release_due()
                self._in_flight.set(self.members.held)
                member = self.members.free()
                if member is None:  # every member serves a backoff
                    self._stop.wait(self.members.until_due())
                    continue
                messages = self.members.poll(member)
                if not messages:
                    if not self.members.held and self._idle_long_enough(idle_exit_s):
                        break
                    continue
                self._last_message = time.monotonic()
                started = time.perf_counter()
                self._handle(member, messages)
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
        except OrderProcError as exc:
            self.health.fail(str(exc))
            raise
        finally:
            self.members.close()
        self.stats.average_price = self.sink.average.overall
        return self.stats

    def _idle_long_enough(self, idle_exit_s: float | None) -> bool:
        if idle_exit_s is None:
            return False
        now = time.monotonic()
        idle = now - self._last_message
        if idle >= idle_exit_s and now >= self._joined_by:
            log.info("idle for %.1fs, exiting", idle)
            return True
        return False

    # -- one poll ------------------------------------------------------------------

    def _handle(self, member: Member, messages: Messages) -> None:
        poll = _Poll(now_ms=now_ms(), now=datetime.now(UTC))
        self._in_flight.inc(len(messages))
        try:
            for msg in messages:
                if msg.error() is not None:
                    on_message_error(msg, self.settings, "share consumer")
                    continue
                self._decide(msg, poll)
            refused = functools.partial(self._dead_letter, poll=poll)
            self.outcomes.store(self.sink, poll.rows, poll.records, refused)
            self._await_dead_letters(poll)
        except BaseException:
            self.members.give_back(member, messages)
            raise
        for msg in poll.accept:
            member.consumer.acknowledge(msg, ACCEPT)
        self.stats.consumed += len(poll.accept)
        self.metrics.consumed.labels(self.settings.orders_topic).inc(len(poll.accept))
        self._in_flight.dec(len(poll.accept))
        # The acknowledgements go with the member's next poll (one round trip fewer), or
        # now when it holds records back: the poll's good records are not held with them.
        if poll.retry:
            self.members.hold(member, poll.retry)

    def _decide(self, msg: Message, poll: _Poll) -> None:
        rec = Record.of(msg)
        delivery = msg.delivery_count() or 1
        self._deliveries.observe(delivery)
        match self.decider.decide(rec, poll.now_ms):
            case Processed(order=order, source=source, replay_id=replay_id):
                src = source or rec
                poll.rows.append(ProcessedRow(
                    order.order_id, order.product, order.price, delivery,
                    src.topic, src.partition, src.offset, poll.now, replay_id,
                ))  # fmt: skip
                poll.records.append(rec)
                poll.accept.append(msg)
                if replay_id is not None:
                    self.outcomes.replayed[ReplayOutcome.PROCESSED].inc()
            case RetryLater(failure=failure) | RetryInPlace(failure=failure):
                failure = dataclasses.replace(failure, attempts=delivery)
                if delivery >= self.settings.max_attempts or not self.policy.should_retry(
                    failure.error, delivery
                ):
                    self._dead_letter(rec, failure, poll)
                    poll.accept.append(msg)
                else:
                    self.outcomes.retried(failure, rec)
                    poll.retry.append((self.policy.delay(delivery), msg))
            case DeadLetter(failure=failure):
                self._dead_letter(rec, dataclasses.replace(failure, attempts=delivery), poll)
                poll.accept.append(msg)
            case NotDue() | RegistryDown():  # no retry topics, no registry (Settings)
                poll.retry.append((0.0, msg))

    def _dead_letter(self, rec: Record, failure: Failure, poll: _Poll) -> None:
        failure = dataclasses.replace(failure, delivery_count=failure.attempts)
        expect = poll.dead.expect_delivery
        self.outcomes.dead_letter(rec, failure, now_ms=poll.now_ms, expect=expect)

    def _await_dead_letters(self, poll: _Poll) -> None:
        if not poll.dead.pending and not poll.dead.errors:
            return
        remaining = self.router.flush()
        if remaining or poll.dead.pending:
            raise DeliveryError(f"{poll.dead.pending} dead letters unacknowledged; stopping")
        if poll.dead.errors:
            raise DeliveryError(
                f"{len(poll.dead.errors)} dead letters refused, first: {poll.dead.errors[0]}"
            )
