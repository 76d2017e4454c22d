"""The producer's and the DLQ monitor's metrics.

The monitor is the long-running process that reads the store on an interval
(``orderproc.dlq.watch``), so the numbers operators alert on that live only in the
store (review backlog, oldest unresolved failure) and in the drain's consumer group
(dead letters not drained yet) are exported here, not by a DAG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from orderproc.metrics.lag import LagGauges
from orderproc.models import DlqStatus


@dataclass
class ProduceStats:
    """What the order producer handed to Kafka, what Kafka acknowledged, what it did not."""

    produced: int = 0
    delivered: int = 0
    failed: int = 0


class ProducerMetrics(Collector):
    """``ProduceStats`` as Prometheus counters, read when scraped.

    The producer counts in plain integers on its hot path, where two ``Counter.inc`` calls
    an order (each takes a lock) cost a sixth of its throughput: 42,000 against 50,000
    orders a second unthrottled, 200,000 orders to a local broker. One thread counts (the
    producer's: delivery reports are served by its own ``poll`` and ``flush``); a scrape
    reads the integers as they stand.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stats = ProduceStats()
        self.registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.stats
        yield CounterMetricFamily(
            "orderproc_orders_produced", "Orders handed to the producer", value=stats.produced
        )
        yield CounterMetricFamily(
            "orderproc_orders_delivered", "Orders the broker acknowledged", value=stats.delivered
        )
        yield CounterMetricFamily(
            "orderproc_order_delivery_failures",
            "Orders the broker did not acknowledge (failed or timed out)",
            value=stats.failed,
        )


class Source(StrEnum):
    """What the monitor refreshes on its interval."""

    KAFKA = "kafka"
    STORE = "store"


class MonitorMetrics:
    """The DLQ monitor: its own lag, the drain's backlog, and the review backlog."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        group: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = r = registry or CollectorRegistry()
        self._clock = clock
        self.lag = LagGauges(r, group)
        self.undrained = Gauge(
            "orderproc_dlq_undrained_messages",
            "Dead letters the drain has not stored yet (DLQ end offset - drain group's commit)",
            ["topic", "partition"],
            registry=r,
        )
        self._oldest_undrained_at: float | None = None
        Gauge(
            "orderproc_dlq_oldest_undrained_age_seconds",
            "Age of the oldest dead letter the drain has not stored yet (0: none waiting)",
            registry=r,
        ).set_function(lambda: self._age(self._oldest_undrained_at))
        self.backlog = Gauge(
            "orderproc_review_backlog_events",
            "Failures in the DLQ store by review status",
            ["status"],
            registry=r,
        )
        for status in DlqStatus:
            self.backlog.labels(status.value)
        self._oldest_unresolved_at: float | None = None
        Gauge(
            "orderproc_review_oldest_unresolved_age_seconds",
            "Age of the oldest failure waiting for review or replay (new/approved; 0: none)",
            registry=r,
        ).set_function(lambda: self._age(self._oldest_unresolved_at))
        self.refreshed = Gauge(
            "orderproc_monitor_last_refresh_timestamp_seconds",
            "When the monitor last read each source successfully (Unix time)",
            ["source"],
            registry=r,
        )
        self.refresh_failures = Counter(
            "orderproc_monitor_refresh_failures",
            "Interval reads of a source that failed",
            ["source"],
            registry=r,
        )
        for source in Source:
            self.refresh_failures.labels(source.value)

    def _age(self, at: float | None) -> float:
        return 0.0 if at is None else max(0.0, self._clock() - at)

    def oldest_undrained(self, at: float | None) -> None:
        """The oldest undrained dead letter's Kafka timestamp (Unix seconds), or None."""
        self._oldest_undrained_at = at

    def oldest_unresolved(self, at: float | None) -> None:
        """The oldest unresolved failure's time (Unix seconds), or None."""
        self._oldest_unresolved_at = at
