"""Queue mode's group members in one process, and the failing records each holds back.

With explicit acknowledgement the client allows no poll while a record of the last one
is unacknowledged, and it has no lock renewal: the member holding a failing record
through its backoff polls nothing until the record is released. So a process may run
several members (``share_members``, 1 by default) and poll whichever are free; one
serving a backoff then costs the process one member, not its stream. A member that is
not polled keeps the fetch it had outstanding: the records the broker answers it with
(one fetch answer; at a steady stream a handful, under a backlog up to a poll's worth)
wait for its turn or the end of its backoff, and must be handled within their lock
(30 s). Several members per process suit a fast handler only (README, "Queue mode").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import AcknowledgeType, KafkaException, Message, Messages, ShareConsumer

from orderproc.errors import BrokerError

log = logging.getLogger(__name__)

RELEASE = AcknowledgeType.RELEASE

POLL_SLICE_S = 0.01
"""How long one free member is polled while others are free too (they are taken in turn,
so records the broker hands to any of them are taken at once)."""


@dataclass
class Member:
    """One share group member: its client, and the failing records it holds back."""

    consumer: ShareConsumer
    held: list[Message] = field(default_factory=list)
    due: float = 0.0  # monotonic time the held records are released

    def commit(self, timeout_s: float) -> None:
        """Send the acknowledgements made so far and wait for the broker's answer
        (refusals are logged by ``acknowledged``)."""
        try:
            self.consumer.commit_sync(timeout_s)
        except KafkaException as exc:
            raise BrokerError(f"share acknowledgement: {exc.args[0].str()}") from exc


class Members:
    """The process's members: polled in turn while free, released when their backoff ends."""

    def __init__(
        self,
        config: dict[str, Any],
        count: int,
        *,
        poll_timeout_s: float,
        commit_timeout_s: float,
        client: Callable[[dict[str, Any]], ShareConsumer] | None = None,
    ) -> None:
        make = client or ShareConsumer
        self.all = [Member(make(config)) for _ in range(count)]
        for member in self.all:
            member.consumer.set_acknowledgement_commit_callback(acknowledged)
        self.poll_timeout_s = poll_timeout_s
        self.commit_timeout_s = commit_timeout_s
        self._next = 0  # where the round robin over free members goes on

    def subscribe(self, topic: str) -> None:
        for member in self.all:
            member.consumer.subscribe([topic])

    @property
    def held(self) -> int:
        return sum(len(member.held) for member in self.all)

    def free(self) -> Member | None:
        """The next member holding nothing back, round robin: each one's fetch is answered
        while the others are polled, and its acknowledgements go with its next poll."""
        n = len(self.all)
        for i in range(n):
            member = self.all[(self._next + i) % n]
            if not member.held:
                self._next = (self._next + i + 1) % n
                return member
        return None

    def poll(self, member: Member) -> Messages:
        timeout = min(self.poll_timeout_s, self.until_due())
        if sum(1 for m in self.all if not m.held) > 1:
            timeout = min(timeout, POLL_SLICE_S)
        try:
            return member.consumer.poll(timeout)
        except KafkaException as exc:
            raise BrokerError(f"share consumer: {exc.args[0].str()}") from exc

    def hold(self, member: Member, retries: Sequence[tuple[float, Message]]) -> None:
        """``member`` keeps ``retries`` (backoff in seconds, record) until the longest backoff
        has passed; its other acknowledgements are sent now, not held with them."""
        member.commit(self.commit_timeout_s)
        member.held = [msg for _, msg in retries]
        member.due = time.monotonic() + max(delay for delay, _ in retries)

    def until_due(self) -> float:
        """Seconds until the first held records are due (the poll timeout when none are)."""
        dues = [member.due for member in self.all if member.held]
        if not dues:
            return self.poll_timeout_s
        return max(0.0, min(dues) - time.monotonic())

    def release_due(self, *, all_now: bool = False) -> None:
        """RELEASE the held records whose backoff has passed (every one with ``all_now``, on
        a stop: an early retry is harmless), and send the acknowledgements."""
        now = time.monotonic()
        for member in self.all:
            if member.held and (all_now or member.due <= now):
                for msg in member.held:
                    member.consumer.acknowledge(msg, RELEASE)
                member.held = []
                member.commit(self.commit_timeout_s)

    def give_back(self, member: Member, messages: Messages) -> None:
        """Every record of ``member``'s poll goes back, none accepted (its outcome is not
        durable); a refused release leaves them to their lock's expiry."""
        for msg in messages:
            if msg.error() is None:
                member.consumer.acknowledge(msg, RELEASE)
        try:
            member.commit(self.commit_timeout_s)
        except BrokerError as exc:
            log.warning("releasing the poll's records: %s (their locks expire instead)", exc)

    def close(self) -> None:
        """Release what is held, then close every member (``close`` sends the pending
        acknowledgements: only ones made after an outcome was durable ever are)."""
        try:
            self.release_due(all_now=True)
        except BrokerError as exc:
            log.warning("releasing held records: %s (their locks expire instead)", exc)
        for member in self.all:
            try:
                member.consumer.close()
            except KafkaException as exc:
                log.warning("share consumer close: %s", exc)


def acknowledged(offsets: dict[Any, set[int]], error: KafkaException | None) -> None:
    """The broker's answer to acknowledgements sent (on a poll, a commit or the close)."""
    if error is not None:
        # Typically a lock that expired first: the broker has handed those records out
        # again. Their outcome here was durable (stored or dead-lettered), so the next
        # delivery finds the order stored, or dead-letters a copy. Nothing is lost.
        where = ", ".join(f"{tp.topic}[{tp.partition}] x{len(o)}" for tp, o in offsets.items())
        log.warning("acknowledgements refused (%s): %s", where or "-", error)
