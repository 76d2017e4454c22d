"""The subjects: ``OrderConsumer`` as it ships, with a no-op sink or PostgreSQL.

The consumer runs unchanged. Two small seams make it measurable:

* ``NullRepository``: a sink that stores nothing (every order is "new"), so the
  no-op runs measure Kafka, decoding, handling, routing and offsets alone;
* ``Stopwatch``: a thin wrapper around the consumer's confluent-kafka ``Consumer``
  that starts the clock when the first batch arrives, asks the consumer to stop
  once batches are durable past every record it must handle (the data topic, and
  the retry topic in the failing runs: told by the offset pipeline's ``on_stored``,
  after offsets are stored or, exactly once, committed in the batch's transaction),
  and stops the clock when the consumer closes (so the last batch's bookkeeping
  counts, the final commit and leaving the group do not). It adds a few operations
  per *batch*, none per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, Message

from bench.stats import Sample
from bench.workload import BenchError, Dataset
from orderproc.config import Settings
from orderproc.store.processed import OrderRepository, ProcessedRow
from orderproc.worker.consumer import ConsumerStats, OrderConsumer
from orderproc.worker.offsets import PendingBatch
from orderproc.worker.share import ShareOrderConsumer


class NullRepository:
    """A sink that records nothing: what an empty table would answer, at no cost."""

    def record_processed(self, rows: Sequence[ProcessedRow]) -> set[str]:
        return {row.order_id for row in rows}

    def price_totals(self) -> dict[str, tuple[int, float]]:
        return {}


class Stopwatch:
    """Times an ``OrderConsumer`` run from its first batch until every target topic is done."""

    def __init__(
        self, inner: Consumer, targets: dict[str, int], on_done: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._targets = targets
        self._on_done = on_done
        self._next: dict[tuple[str, int], int] = {}  # partition -> next offset stored
        self.started: float | None = None
        self.done_at: dict[str, float] = {}  # topic -> when its target was reached
        self.finished: float | None = None

    def handled(self, topic: str) -> int:
        """Records of ``topic`` with offsets stored: its offsets start at 0 (a fresh topic)."""
        return sum(o for (t, _), o in self._next.items() if t == topic)

    @property
    def reached(self) -> bool:
        return len(self.done_at) == len(self._targets)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        messages: list[Message] = self._inner.consume(num_messages, timeout)
        if messages and self.started is None:
            self.started = time.perf_counter()
        return messages

    def stored(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """A batch became durable (offsets stored, or committed in its transaction)."""
        self._next.update(next_offsets)
        if self.reached:
            return
        for topic, target in self._targets.items():
            if topic not in self.done_at and self.handled(topic) >= target:
                self.done_at[topic] = time.perf_counter()
        if self.reached:
            self._on_done()

    def close(self) -> None:
        if self.reached and self.finished is None:
            self.finished = time.perf_counter()
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass(frozen=True, slots=True)
class ConsumerRun:
    sample: Sample
    """Every target done: all records of the data topic, and of the retry topic when given."""
    main: Sample
    """The data topic alone: its good orders processed, its failing ones sent to retry."""
    stats: ConsumerStats


def run_consumer(
    settings: Settings,
    repository: OrderRepository | NullRepository,
    dataset: Dataset,
    target: int,
    idle_s: float,
    *,
    retried: int = 0,
) -> ConsumerRun:
    """Run the consumer over ``target`` records of the data topic and time it.

    With ``retried`` > 0 the clock runs on until that many records of the first retry
    topic are handled too (dead-lettered, with ``max_attempts=2``).
    """
    consumer = OrderConsumer(settings, cast(OrderRepository, repository), echo=None)
    targets = {dataset.topic: target}
    if retried:
        targets[settings.retry_topic(1)] = retried
    watch = Stopwatch(consumer.consumer, targets, consumer.stop)
    consumer.consumer = consumer.offsets.consumer = cast(Consumer, watch)
    on_stored = consumer.offsets._on_stored

    def stored(batch: PendingBatch) -> None:
        watch.stored(batch.next_offsets)
        if on_stored is not None:
            on_stored(batch)

    consumer.offsets._on_stored = stored
    stats = consumer.run(idle_exit_s=idle_s)
    if watch.started is None or watch.finished is None:
        progress = ", ".join(f"{t}: {watch.handled(t)}/{n}" for t, n in targets.items())
        raise BenchError(f"OrderConsumer went idle before the end ({progress})")
    count = watch.handled(dataset.topic)
    return ConsumerRun(
        Sample(count, watch.finished - watch.started),
        Sample(count, watch.done_at[dataset.topic] - watch.started),
        stats,
    )


def check_full_run(stats: ConsumerStats, dataset: Dataset) -> None:
    """A full run did all the work: good orders processed, failing ones retried, then DLQ'd."""
    got = (stats.processed, stats.retried, stats.dead_lettered)
    expected = (dataset.good, dataset.failing, dataset.failing)
    if got != expected:
        raise BenchError(
            f"run on {dataset.topic}: processed/retried/dead-lettered {got}, expected {expected}"
        )


@dataclass
class ShareTally:
    """What the members of one ``ShareOrderConsumer`` run polled, and when."""

    target: int
    on_done: Callable[[], None]
    polled: int = 0
    started: float | None = None
    finished: float | None = None


class ShareStopwatch:
    """Times a ``ShareOrderConsumer`` run, through each of its members' clients, from the
    first records until they have handled ``target`` (the stop is asked for on the poll that
    reaches it, so that poll is handled and acknowledged); each member's final
    acknowledgements count, leaving the group not."""

    def __init__(self, inner: Any, tally: ShareTally) -> None:
        self._inner = inner
        self._tally = tally

    def poll(self, timeout: float = -1) -> Any:
        messages = self._inner.poll(timeout)
        tally = self._tally
        if messages:
            if tally.started is None:
                tally.started = time.perf_counter()
            tally.polled += len(messages)
            if tally.polled >= tally.target:
                tally.on_done()
        return messages

    def close(self) -> None:
        if self._tally.polled >= self._tally.target:
            self._inner.commit_sync()
            self._tally.finished = time.perf_counter()  # the last member's close sets it last
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_share_consumer(
    settings: Settings, repository: NullRepository, target: int, idle_s: float
) -> ConsumerRun:
    """Run ``ShareOrderConsumer`` (queue mode) over ``target`` records and time it."""
    consumer = ShareOrderConsumer(settings, cast(OrderRepository, repository), echo=None)
    tally = ShareTally(target, consumer.stop)
    for member in consumer.members.all:
        member.consumer = cast(Any, ShareStopwatch(member.consumer, tally))
    stats = consumer.run(idle_exit_s=idle_s)
    if tally.started is None or tally.finished is None:
        raise BenchError(f"ShareOrderConsumer went idle after {tally.polled} of {target} records")
    sample = Sample(tally.polled, tally.finished - tally.started)
    return ConsumerRun(sample, sample, stats)
