"""Replicas: which partitions lack in-sync replicas (a broker down, or catching up).

Read from a metadata answer (``ClusterMetadata``), so every caller that already asked
the broker for its metadata (the access check, ``orderproc status``, the dev stack's
status) names them without another request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UnderReplicated:
    """A partition with fewer in-sync replicas than replicas (a broker down or catching up)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int

    def __str__(self) -> str:
        text = f"{self.topic}[{self.partition}] in sync {_ids(self.isr)} of {_ids(self.replicas)}"
        return text if self.leader >= 0 else f"{text}, no leader"


def under_replicated(metadata: Any, topics: Iterable[str] | None = None) -> list[UnderReplicated]:
    """The partitions of ``topics`` (default: every topic, internal ones too) in ``metadata``
    (a ``ClusterMetadata``) whose in-sync replicas are fewer than their replicas."""
    known = metadata.topics
    names = sorted(known) if topics is None else [t for t in dict.fromkeys(topics) if t in known]
    found = []
    for name in names:
        for pid, part in sorted(known[name].partitions.items()):
            if len(part.isrs) < len(part.replicas) or part.leader < 0:
                found.append(UnderReplicated(name, pid, tuple(part.replicas), tuple(part.isrs),
                                             part.leader))  # fmt: skip
    return found


def replication_of(metadata: Any, topic: str) -> int:
    """How many replicas ``topic``'s partitions have in ``metadata`` (0 when unknown)."""
    info = metadata.topics.get(topic)
    parts = list(info.partitions.values()) if info is not None else []
    return max((len(p.replicas) for p in parts), default=0)


def _ids(ids: tuple[int, ...]) -> str:
    return "[" + ",".join(str(i) for i in ids) + "]"
