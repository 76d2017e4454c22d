"""Paused partitions: a retry partition waiting for its head record, or all of them
while the flood breaker is open.

A partition is *held* by pausing it and rewinding it (``OffsetPipeline.rewind``) to
the first record that was not handled, so that record is the next one read when
the partition resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from orderproc.records import TP
from orderproc.worker.offsets import OffsetPipeline


class PartitionHolds:
    """Which partitions are paused, until when, and resuming them when due."""

    def __init__(
        self, consumer: Consumer, offsets: OffsetPipeline, on_change: Callable[[int], None]
    ) -> None:
        self.consumer = consumer
        self.offsets = offsets
        self.paused: dict[TP, float] = {}  # paused partition -> monotonic time it may resume
        self._on_change = on_change

    def __bool__(self) -> bool:
        return bool(self.paused)

    def __contains__(self, tp: object) -> bool:
        return tp in self.paused

    def hold(self, topic: str, partition: int, offset: int, *, until: float) -> None:
        """Pause the partition and rewind it to ``offset``."""
        self.consumer.pause([TopicPartition(topic, partition)])
        self.offsets.rewind(topic, partition, offset)
        self.paused[(topic, partition)] = until
        self._on_change(len(self.paused))

    def hold_all(
        self, unhandled: Iterable[Any], assigned: Iterable[TopicPartition], *, until: float
    ) -> None:
        """Hold every partition: those with ``unhandled`` messages at the first of them
        (messages of one partition come in offset order), the rest where they are."""
        for msg in unhandled:
            tp = (msg.topic(), msg.partition())
            if msg.error() is None and tp not in self.paused:
                self.hold(tp[0], tp[1], msg.offset(), until=until)
        self.pause_rest(assigned, until=until)

    def pause_rest(self, assigned: Iterable[TopicPartition], *, until: float) -> None:
        """Pause every assigned partition not held yet (nothing of theirs was handled)."""
        for tp in assigned:
            key = (tp.topic, tp.partition)
            if key not in self.paused:
                self.consumer.pause([tp])
                self.paused[key] = until
        self._on_change(len(self.paused))

    def release(self, tp: TP) -> None:
        """Resume a held partition now, whatever it was waiting for."""
        if self.paused.pop(tp, None) is not None:
            self.consumer.resume([TopicPartition(*tp)])
            self._on_change(len(self.paused))

    def forget(self, partitions: Iterable[TP]) -> None:
        """Partitions were revoked: their pause state goes with them."""
        for tp in partitions:
            self.paused.pop(tp, None)
        self._on_change(len(self.paused))

    def resume_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, until in self.paused.items() if until <= now]
        if due:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self.paused[tp]
            self._on_change(len(self.paused))

    def next_due_in(self) -> float | None:
        """Seconds until the earliest held partition may resume (None: nothing held)."""
        if not self.paused:
            return None
        return min(self.paused.values()) - time.monotonic()
