"""What waits on the dead-letter side: dead letters the drain has not stored yet, and
failures in the store waiting for a reviewer or a replay.

``drain_backlog`` and ``review_backlog`` are read by ``orderproc status`` once and by
the DLQ monitor on an interval (``Watch``), which exports them as metrics
(``orderproc.metrics.roles.MonitorMetrics``): the drain runs in Airflow and exits, the
store has no process of its own, so the long-running monitor is the one that tells.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from orderproc.config import Settings
from orderproc.dlq.backlog import Oldest
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.store import DlqStore
from orderproc.errors import BrokerError, ConfigError, OrderProcError
from orderproc.kafka.clients import Admin, drain_group
from orderproc.kafka.groups import (
    TP,
    GroupView,
    group_view,
    kafka_reason,
    offset_range,
    partitions_of,
    peek,
)
from orderproc.metrics.roles import MonitorMetrics, Source
from orderproc.store.engine import make_engine, store_error

log = logging.getLogger(__name__)

UNDRAINED_LIMIT_S = 1800.0
"""A dead letter the drain (every 5 minutes) has not stored after this long means the drain
DAG is failing: ``orderproc status`` and the ``DeadLettersNotDrained`` alert say so."""


@dataclass(frozen=True, slots=True)
class DrainBacklog:
    """The drain's group on the DLQ, and what really waits past its commits.

    ``waiting`` is the lag of each partition, or 0 where no record waits (only commit
    markers past the commit); ``oldest_ms`` the Kafka timestamp of the oldest waiting one.
    """

    view: GroupView
    waiting: dict[TP, int] = field(default_factory=dict)
    oldest_ms: int | None = None

    @property
    def total(self) -> int:
        return sum(self.waiting.values())


@dataclass(frozen=True, slots=True)
class ReviewBacklog:
    """Failures per review status, and the unresolved one that has waited longest."""

    counts: dict[str, int]
    oldest: Oldest | None


def drain_backlog(settings: Settings, admin: Admin, timeout_s: float) -> DrainBacklog:
    """Dead letters past the drain group's committed offsets.

    Raises:
        BrokerError: the DLQ topic does not exist. (``KafkaException`` when Kafka does
            not answer.)
    """
    partitions = partitions_of(admin, [settings.dlq_topic], timeout_s)
    if not partitions:
        raise BrokerError(f"DLQ topic {settings.dlq_topic} does not exist")
    tps = [(t, p) for t, parts in partitions.items() for p in parts]
    ranges = offset_range(admin, tps, timeout_s)
    view = group_view(admin, drain_group(settings), partitions, ranges, timeout_s)
    return waiting_in(settings, view, timeout_s)


def waiting_in(settings: Settings, view: GroupView, timeout_s: float) -> DrainBacklog:
    """``view``'s partitions with the records that really wait (read from the DLQ)."""
    behind = {
        (p.topic, p.partition): max(p.committed or 0, p.start) for p in view.partitions if p.lag
    }
    stamps = peek(settings.kafka_config(), behind, timeout_s)
    waiting = {(p.topic, p.partition): p.lag if (p.topic, p.partition) in stamps else 0
               for p in view.partitions}  # fmt: skip
    return DrainBacklog(view, waiting, min(stamps.values(), default=None))


def review_backlog(engine: Engine) -> ReviewBacklog:
    """Rows per status (every status, zero included) and the oldest unresolved one.

    Raises:
        StoreError: the store cannot be read.
    """
    store = DlqStore(engine)
    try:
        return ReviewBacklog(store.status_counts(EventFilter()), store.oldest_unresolved())
    except SQLAlchemyError as exc:
        raise store_error("cannot read the DLQ store", exc) from exc


class Watch:
    """The monitor's interval reads, exported through ``metrics``; ``run`` in a thread."""

    def __init__(self, settings: Settings, metrics: MonitorMetrics, *, interval_s: float) -> None:
        self.settings = settings
        self.metrics = metrics
        self.interval_s = interval_s
        self._failing: dict[Source, str] = {}

    def run(self, stop: threading.Event) -> None:
        """Refresh every ``interval_s`` until ``stop`` is set; clients live in this thread."""
        try:
            engine = make_engine(self.settings.effective_database_url)
        except ConfigError as exc:  # a URL it cannot use: said once, the monitor tails on
            log.error("monitor: cannot read the store, no backlog metrics: %s", exc)
            return
        try:
            with Admin(self.settings.kafka_config()) as admin:
                while True:
                    self.refresh(admin, engine)
                    if stop.wait(self.interval_s):
                        return
        finally:
            engine.dispose()

    def refresh(self, admin: Admin, engine: Engine) -> None:
        timeout = self.settings.admin_timeout_s
        with self._reading(Source.KAFKA):
            drained = drain_backlog(self.settings, admin, timeout)
            for (topic, partition), n in drained.waiting.items():
                self.metrics.undrained.labels(topic, str(partition)).set(n)
            oldest = drained.oldest_ms
            self.metrics.oldest_undrained(None if oldest is None else oldest / 1000)
        with self._reading(Source.STORE):
            review = review_backlog(engine)
            for status, n in review.counts.items():
                self.metrics.backlog.labels(status).set(n)
            at = review.oldest.failed_at.timestamp() if review.oldest else None
            self.metrics.oldest_unresolved(at)

    @contextmanager
    def _reading(self, source: Source) -> Iterator[None]:
        """Read one source: its success, or its failure in one line, is recorded."""
        try:
            yield
        except KafkaException as exc:
            self._failed(source, kafka_reason(exc))
        except OrderProcError as exc:
            self._failed(source, str(exc))
        else:
            if self._failing.pop(source, None) is not None:
                log.warning("monitor: reading %s works again", source.value)
            self.metrics.refreshed.labels(source.value).set_to_current_time()

    def _failed(self, source: Source, why: str) -> None:
        self.metrics.refresh_failures.labels(source.value).inc()
        if self._failing.get(source) != why:  # once per distinct failure, not per interval
            log.error("monitor: cannot read %s: %s", source.value, why)
        self._failing[source] = why
