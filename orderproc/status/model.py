"""What ``orderproc status`` found, as plain data (the screen and ``--json`` both read it).

A ``Finding`` is something that needs attention; ``Status.errors`` says what status could
not look at (the broker, the store). Exit code: 2 when it could not look, else 1 when
something needs attention, else 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Finding:
    """Something that needs attention: what (a group, a worker...) and why, in one line."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


@dataclass
class Broker:
    bootstrap: str
    reachable: bool = False
    cluster_id: str | None = None
    controller: str | None = None
    nodes: list[str] = field(default_factory=list)
    version: str | None = None


@dataclass
class Topic:
    name: str
    exists: bool
    partitions: int = 0
    replication: int = 0
    under_replicated: int = 0
    """Partitions with fewer in-sync replicas than replicas (named in a finding)."""
    end_offsets: dict[int, int] = field(default_factory=dict)


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass
class Group:
    """A consumer group the system runs, looked at twice ``window_s`` apart."""

    group: str
    role: str
    state: str
    members: int
    lag: int
    lag_change: int | None
    offsets_moved: bool | None
    partitions: list[PartitionLag] = field(default_factory=list)


@dataclass
class Dlq:
    """Dead letters the drain has not stored yet."""

    undrained: int
    oldest_undrained_age_s: float | None


@dataclass
class Review:
    """The review backlog in the store."""

    counts: dict[str, int]
    oldest_unresolved_id: int | None
    oldest_unresolved_age_s: float | None


@dataclass
class LastRun:
    """When a job last did something, and who (the Airflow run) or where (report files)."""

    at: str | None
    age_s: float | None
    by: str | None


@dataclass
class Worker:
    """A running worker, as its ``/healthz`` and ``/metrics`` say."""

    url: str
    reachable: bool
    role: str | None = None
    healthy: bool | None = None
    detail: str | None = None
    flood_breaker_open: bool | None = None
    paused_partitions: int | None = None
    lag: int | None = None


@dataclass
class Status:
    checked_at: str
    broker: Broker
    topics: list[Topic] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    dlq: Dlq | None = None
    review: Review | None = None
    last: dict[str, LastRun | None] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 2 if self.errors else 1 if self.findings else 0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["exit_code"] = self.exit_code
        doc["findings"] = [str(f) for f in self.findings]
        return doc
