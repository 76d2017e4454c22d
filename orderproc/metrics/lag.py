"""Consumer lag from the consumer's own librdkafka statistics (``statistics.interval.ms``).

No second client asks the broker: librdkafka reports, per assigned partition, the
committed offset, the end offset (the last stable offset when reading committed) and
their difference. One gap, measured on the real broker: a *paused* partition is not
fetched, so its end offset in the statistics stops moving (paused with 30 records,
80 produced, the statistics still said 30). The consumer pauses retry partitions
while their head waits and every partition while the flood breaker is open, so it
refreshes the end offsets of paused partitions itself (``set_end``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Gauge

TP = tuple[str, int]


class PartitionLag(NamedTuple):
    """One assigned partition in a statistics payload."""

    topic: str
    partition: int
    committed: int
    end: int
    lag: int


def parse_stats(stats_json: str) -> list[PartitionLag] | None:
    """The assigned partitions of a ``stats_cb`` payload whose lag is known; None when the
    payload is not a statistics object (never raises: it runs inside librdkafka's poll)."""
    try:
        stats: Any = json.loads(stats_json)
    except ValueError:
        return None
    if not isinstance(stats, dict):
        return None
    out = []
    for topic, tstats in (stats.get("topics") or {}).items():
        for part, p in (tstats.get("partitions") or {}).items():
            lag = p.get("consumer_lag", -1)
            if part == "-1" or not isinstance(lag, int) or lag < 0:
                continue  # librdkafka's unassigned pseudo-partition, or not known yet
            end = p.get("ls_offset", p.get("hi_offset", -1))
            out.append(PartitionLag(topic, int(part), p.get("committed_offset", -1), end, lag))
    return out


class LagGauges:
    """``orderproc_consumer_lag_messages`` for a group's input topics and, for the order
    consumer, ``orderproc_retry_backlog_messages`` for its retry topics."""

    def __init__(
        self, registry: CollectorRegistry, group: str, retry_topics: Iterable[str] = ()
    ) -> None:
        self.group = group
        self.retry_topics = frozenset(retry_topics)
        labels = ["group", "topic", "partition"]
        self.lag = Gauge(
            "orderproc_consumer_lag_messages",
            "Records of an input topic past the group's committed offset (librdkafka statistics)",
            labels,
            registry=registry,
        )
        self.retry_backlog: Gauge | None = None
        if self.retry_topics:
            self.retry_backlog = Gauge(
                "orderproc_retry_backlog_messages",
                "Records waiting on a retry topic past the group's committed offset",
                labels,
                registry=registry,
            )
        self.committed: dict[TP, int] = {}
        self.ticks = 0  # statistics payloads seen
        self._shown: set[TP] = set()

    def _gauge(self, topic: str) -> Gauge:
        return self.retry_backlog if topic in self.retry_topics and self.retry_backlog else self.lag

    def update_from_stats(self, stats_json: str) -> None:
        """A ``stats_cb`` payload: publish each assigned partition's lag, drop the others."""
        parts = parse_stats(stats_json)
        if parts is None:
            return
        seen: set[TP] = set()
        for p in parts:
            tp = (p.topic, p.partition)
            seen.add(tp)
            self.committed[tp] = p.committed
            self._gauge(p.topic).labels(self.group, p.topic, str(p.partition)).set(p.lag)
        for topic, partition in self._shown - seen:  # revoked: no stale lag left behind
            self._gauge(topic).remove(self.group, topic, str(partition))
            self.committed.pop((topic, partition), None)
        self._shown = seen
        self.ticks += 1

    def set_end(self, tp: TP, end: int) -> None:
        """A fresher end offset for ``tp`` (a paused partition): lag against its commit."""
        committed = self.committed.get(tp, -1)
        if tp in self._shown and committed >= 0:
            self._gauge(tp[0]).labels(self.group, tp[0], str(tp[1])).set(max(0, end - committed))
