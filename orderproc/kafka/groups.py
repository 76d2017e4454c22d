"""Consumer groups as the broker sees them: state, members, committed offsets and lag.

What ``kafka-consumer-groups --describe`` prints, for ``orderproc status`` and the DLQ
monitor. End offsets are read ``read_committed`` (the last stable offset: what our
readers can reach). A partition's lag is its end offset minus the group's committed
offset, or minus its first offset when the group has committed nothing there (every
group of ours starts at the earliest record). A commit marker takes an offset too, so
after a transaction a group that has read everything can show a lag of 1 here;
``peek`` tells whether a record really waits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # not in __all__

from orderproc.errors import BrokerError
from orderproc.kafka.clients import Admin

TP = tuple[str, int]

_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]  # untyped in confluent-kafka
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def kafka_reason(exc: KafkaException) -> str:
    """The one line a ``KafkaException`` carries (its ``KafkaError``'s text)."""
    err = exc.args[0] if exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition of a group: where it is, where the partition starts and ends."""

    topic: str
    partition: int
    committed: int | None
    start: int
    end: int

    @property
    def lag(self) -> int:
        done = self.start if self.committed is None else max(self.committed, self.start)
        return max(0, self.end - done)


@dataclass(frozen=True, slots=True)
class GroupView:
    """A consumer group: its state (``stable``, ``empty``, ``dead``: never used...),
    how many members it has now, and its offsets on the topics asked about."""

    group: str
    state: str
    members: int
    partitions: tuple[PartitionOffsets, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


def partitions_of(admin: Admin, topics: Sequence[str], timeout_s: float) -> dict[str, list[int]]:
    """The partitions of each topic that exists (a missing topic is left out)."""
    metadata = admin.list_topics(timeout=timeout_s)
    out = {}
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is not None and info.error is None:
            out[topic] = sorted(info.partitions)
    return out


def offset_range(admin: Admin, tps: Sequence[TP], timeout_s: float) -> dict[TP, tuple[int, int]]:
    """First and end (last stable) offset of each partition."""
    if not tps:
        return {}
    ranges: dict[TP, list[int]] = {tp: [0, 0] for tp in tps}
    for i, spec in enumerate((_EARLIEST, _LATEST)):
        asked = {TopicPartition(t, p): spec for t, p in tps}
        futures = admin.list_offsets(
            asked, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout_s
        )
        for tp, future in futures.items():
            ranges[(tp.topic, tp.partition)][i] = int(future.result().offset)
    return {tp: (low, high) for tp, (low, high) in ranges.items()}


def group_view(
    admin: Admin,
    group: str,
    partitions: Mapping[str, Sequence[int]],
    ranges: Mapping[TP, tuple[int, int]],
    timeout_s: float,
) -> GroupView:
    """State, members and offsets of ``group`` on ``partitions`` (with their ``ranges``)."""
    described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result()
    state = described.state.name.lower() if described.state is not None else "unknown"
    tps = [TopicPartition(t, p) for t, parts in partitions.items() for p in parts]
    committed: dict[TP, int | None] = {}
    if tps:
        asked = [ConsumerGroupTopicPartitions(group, tps)]
        answer = admin.list_consumer_group_offsets(asked, request_timeout=timeout_s)[group]
        for tp in answer.result().topic_partitions:
            committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    rows = tuple(
        PartitionOffsets(t, p, committed.get((t, p)), *ranges.get((t, p), (0, 0)))
        for t, parts in partitions.items()
        for p in parts
    )
    return GroupView(group, state, len(described.members), rows)


def peek(conf: Mapping[str, object], at: Mapping[TP, int], timeout_s: float) -> dict[TP, int]:
    """The Kafka timestamp (ms) of the first committed record at or after each offset;
    a partition with no record there (only commit markers, or nothing) is left out.

    Reads with a consumer that joins no group and commits nothing.
    """
    if not at:
        return {}
    consumer = Consumer({
        **conf, "group.id": f"orderproc-peek-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.partition.eof": True,
        "isolation.level": "read_committed", "auto.offset.reset": "latest",
    })  # fmt: skip
    found: dict[TP, int] = {}
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in at.items()])
        todo = set(at)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(len(todo), timeout=0.2):
                tp = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    continue
                if err is None and tp in todo:
                    found[tp] = msg.timestamp()[1]
                todo.discard(tp)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the DLQ to date its records: {kafka_reason(exc)}") from exc
    finally:
        consumer.close()
    return found
