"""The order consumer's metrics: what it read, processed, retried, dead-lettered, and its lag.

Bounded label sets, each value known in advance and exported at 0 from the start (so a
rate or an alert over a label that has not happened yet has a series to read):
``topic`` (the orders topic and its retry topics), ``mode`` (retry mode), ``category``
(``orderproc.errors.ErrorCategory``), ``outcome`` (``ReplayOutcome``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orderproc.errors import ErrorCategory
from orderproc.metrics.lag import LagGauges


class ReplayOutcome(StrEnum):
    """What became of a replayed order (one carrying ``replay.id``) when it was consumed."""

    PROCESSED = "processed"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


class ConsumerMetrics:
    """The consumer's metrics, in a registry of its own (several consumers may share a process)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        group: str = "",
        retry_topics: Iterable[str] = (),
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "orderproc_messages_consumed", "Records read from Kafka and handled", ["topic"],
            registry=r,
        )  # fmt: skip
        self.processed = Counter(
            "orderproc_orders_processed", "Orders processed and recorded", registry=r
        )
        self.duplicates = Counter(
            "orderproc_orders_duplicate",
            "Redelivered orders already recorded (ignored)",
            registry=r,
        )
        self.retried = Counter(
            "orderproc_orders_retried", "Failed attempts scheduled for retry", ["mode"], registry=r
        )
        self.dead_lettered = Counter(
            "orderproc_orders_dead_lettered", "Orders sent to the DLQ", ["category"], registry=r
        )
        for category in ErrorCategory:
            self.dead_lettered.labels(category.value)
        self.replayed = Counter(
            "orderproc_replayed_orders",
            "Replayed orders consumed, by what became of them",
            ["outcome"],
            registry=r,
        )
        for outcome in ReplayOutcome:
            self.replayed.labels(outcome.value)
        self.batch_seconds = Histogram(
            "orderproc_batch_processing_seconds",
            "Time to handle one batch and make it durable (store, retry/DLQ records, offsets)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.record_latency = Histogram(
            "orderproc_record_latency_seconds",
            "From the record's Kafka timestamp to its offset being stored",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.running_average = Gauge(
            "orderproc_running_average_price", "Average price of processed orders", registry=r
        )
        self.lag = LagGauges(r, group, retry_topics)
        self.flood_open = Gauge(
            "orderproc_flood_breaker_open",
            "1 while the flood breaker holds consumption paused",
            registry=r,
        )
        self.flood_trips = Counter(
            "orderproc_flood_breaker_trips", "Times the flood breaker tripped", registry=r
        )
        self.paused_partitions = Gauge(
            "orderproc_paused_partitions", "Partitions paused (retry delay or breaker)", registry=r
        )

    def update_lag_from_stats(self, stats_json: str) -> None:
        """librdkafka ``stats_cb`` payload -> per-partition consumer lag."""
        self.lag.update_from_stats(stats_json)
