"""The Kafka side of ``orderproc status``: broker, topics, every group the system runs, and
the dead letters the drain has not stored yet.

Each group is looked at twice, ``window_s`` apart: a group whose lag grew while its
committed offsets did not move is stuck (both long-running groups commit every second
while they make progress), which one look cannot tell from a group that is busy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from orderproc.config import Settings
from orderproc.dlq.watch import UNDRAINED_LIMIT_S, waiting_in
from orderproc.errors import BrokerError
from orderproc.kafka.access import connect
from orderproc.kafka.clients import Admin, drain_group
from orderproc.kafka.groups import GroupView, group_view, kafka_reason, offset_range
from orderproc.kafka.replicas import UnderReplicated, replication_of, under_replicated
from orderproc.kafka.topics import required_topics
from orderproc.kafka.version import broker_version
from orderproc.status.model import Broker, Dlq, Finding, Group, PartitionLag, Status, Topic


@dataclass(frozen=True, slots=True)
class Watched:
    """A group the system runs: its role, what it reads, and whether it should always run."""

    group: str
    role: str
    topics: tuple[str, ...]
    always_running: bool


def watched_groups(settings: Settings) -> list[Watched]:
    """The order consumer's group (orders and its retry topics), the DLQ monitor's and the
    drain's (which runs every few minutes in Airflow, so it is often empty)."""
    return [
        Watched(settings.consumer_group, "consumer",
                (settings.orders_topic, *settings.retry_topics), True),
        Watched(settings.dlq_group, "dlq monitor", (settings.dlq_topic,), True),
        Watched(drain_group(settings), "drain", (settings.dlq_topic,), False),
    ]  # fmt: skip


def look_at_kafka(settings: Settings, status: Status, *, window_s: float, timeout_s: float) -> None:
    """Fill in the broker, topics, groups and DLQ parts of ``status``.

    Raises:
        BrokerError: the broker cannot be reached or refuses us (status cannot look).
    """
    conf = settings.kafka_config()
    admin, metadata = connect(conf, timeout_s)
    with admin:
        try:
            _broker(settings, admin, status.broker, timeout_s)
            partitions = _topics(settings, metadata, status)
            watched = watched_groups(settings)
            second = _look(admin, watched, partitions, timeout_s)
            first: _Look | None = None
            if window_s > 0:
                time.sleep(window_s)
                first, second = second, _look(admin, watched, partitions, timeout_s)
        except KafkaException as exc:
            why = kafka_reason(exc)
            raise BrokerError(f"Kafka at {settings.bootstrap_servers}: {why}") from exc
    for topic in status.topics:
        topic.end_offsets = {
            p: high for (t, p), (_, high) in second.ranges.items() if t == topic.name
        }
    for w in watched:
        before = first.views[w.group] if first else None
        status.groups.append(_group(w, second.views[w.group], before, window_s, status.findings))
    _dlq(settings, second.views[drain_group(settings)], status, timeout_s)


@dataclass(frozen=True, slots=True)
class _Look:
    """One look: every partition's offset range and every group's offsets."""

    ranges: dict[tuple[str, int], tuple[int, int]]
    views: dict[str, GroupView]


def _look(
    admin: Admin, watched: list[Watched], partitions: dict[str, list[int]], timeout_s: float
) -> _Look:
    tps = [(t, p) for t, parts in partitions.items() for p in parts]
    ranges = offset_range(admin, tps, timeout_s)
    views = {}
    for w in watched:
        mine = {t: partitions[t] for t in w.topics if t in partitions}
        views[w.group] = group_view(admin, w.group, mine, ranges, timeout_s)
    return _Look(ranges, views)


def _broker(settings: Settings, admin: Admin, broker: Broker, timeout_s: float) -> None:
    cluster = admin.describe_cluster(request_timeout=timeout_s).result()
    broker.reachable = True
    broker.cluster_id = cluster.cluster_id
    broker.controller = f"{cluster.controller.id}" if cluster.controller else None
    broker.nodes = [f"{n.id}: {n.host}:{n.port}" for n in cluster.nodes]
    try:
        broker.version = broker_version(settings, timeout_s).describe()
    except (OSError, ValueError) as exc:
        broker.version = f"unknown ({exc})"


def _topics(settings: Settings, metadata: Any, status: Status) -> dict[str, list[int]]:
    known = metadata.topics
    out = {}
    for name in required_topics(settings):
        info = known.get(name)
        if info is None or info.error is not None:
            status.topics.append(Topic(name, exists=False))
            status.findings.append(
                Finding(f"topic {name}", "does not exist (orderproc topics create)")
            )
            continue
        parts = sorted(info.partitions)
        lagging = under_replicated(metadata, [name])
        status.topics.append(
            Topic(name, True, len(parts), replication_of(metadata, name), len(lagging))
        )
        if lagging:
            status.findings.append(Finding(f"topic {name}", _lagging(settings, lagging)))
        out[name] = parts
    return out


def _lagging(settings: Settings, lagging: list[UnderReplicated]) -> str:
    text = f"{len(lagging)} under-replicated: {'; '.join(map(str, lagging))}"
    below = settings.min_insync_replicas
    if any(len(u.isr) < below or u.leader < 0 for u in lagging):
        text += f" (below min.insync.replicas {below} or leaderless: writes to them wait)"
    return text


def _group(
    w: Watched,
    now: GroupView,
    before: GroupView | None,
    window_s: float,
    findings: list[Finding],
) -> Group:
    rows = [PartitionLag(p.topic, p.partition, p.committed, p.end, p.lag) for p in now.partitions]
    change = moved = None
    if before is not None:
        change = now.lag - before.lag
        then = {(p.topic, p.partition): p.committed for p in before.partitions}
        moved = any(then.get((p.topic, p.partition)) != p.committed for p in now.partitions)
    group = Group(w.group, w.role, now.state, now.members, now.lag, change, moved, rows)
    if w.always_running and now.members == 0:
        findings.append(Finding(w.group, f"no member in the group: the {w.role} is not running"))
    if w.always_running and change is not None and change > 0 and not moved:
        findings.append(
            Finding(
                w.group,
                f"lag growing (+{change} in {window_s:g}s, now {now.lag}) "
                "and its committed offsets are not moving",
            )
        )
    return group


def _dlq(settings: Settings, drain: GroupView, status: Status, timeout_s: float) -> None:
    backlog = waiting_in(settings, drain, timeout_s)
    age = None if backlog.oldest_ms is None else max(0.0, time.time() - backlog.oldest_ms / 1000)
    status.dlq = Dlq(backlog.total, age)
    if age is not None and age > UNDRAINED_LIMIT_S:
        status.findings.append(
            Finding(
                "dead letters",
                f"{backlog.total} not drained, the oldest for "
                f"{age / 60:.0f} min (is the orders_dlq_drain DAG failing?)",
            )
        )
