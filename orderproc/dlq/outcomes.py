"""What became of the copies a replay run published: the live consumer's verdict, matched
row by row and stored in the run (``orderproc.dlq.runs``).

A published row (``pending``) is decided by the first of:

* **processed**: ``processed_orders`` holds the order the replay published, stored with
  this run's replay id (the consumer keeps the ``replay.id`` lineage header of the copy
  it stored: ``orderproc.store.processed.replayed_copy_processed``, the join the report
  uses too);
* **failed again**: a record of the DLQ topic whose lineage headers name this run
  (``replay.id``) and the row's DLQ record (``replay.dlq.topic/partition/offset``): the
  copy failed its attempts again and was dead-lettered. The failure is folded to the
  row it replays, as its next trip: the reason and the new dead letter's coordinates
  (once drained, that record is a review row of its own).

The DLQ is read from where it ended when the run began (``dlq_positions``, moved on
with each look), by a consumer that is assigned its partitions, joins no group and
commits nothing: a look never moves an offset of the live stream, the monitor or the
drain. It reads ``read_committed``, so under exactly-once it sees only dead letters
whose consumer transaction committed. Every look is idempotent: it only decides rows
still undecided, so looks may repeat, overlap or die half-way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from sqlalchemy import Engine, exists, func, select, update
from sqlalchemy.orm import Session

from orderproc import headers as h
from orderproc.clock import as_utc, utcnow
from orderproc.dlq.envelope import event_row
from orderproc.dlq.runs import PUBLISHED, RowOutcome
from orderproc.errors import BrokerError
from orderproc.records import Record
from orderproc.store.processed import replayed_copy_processed
from orderproc.store.tables import DlqEvent, ReplayRun, ReplayRunRow


@dataclass(frozen=True, slots=True)
class Failure:
    """A dead letter of a run's copy: the row's DLQ record it replays, why, where it is."""

    lineage: tuple[str, int, int]
    reason: str
    trip: tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Tally:
    """A run's rows by outcome, the reasons its copies failed again (most frequent
    first), and when the oldest copy still pending was published."""

    counts: Mapping[str, int] = field(default_factory=dict)
    reasons: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_at: datetime | None = None

    def __getitem__(self, outcome: RowOutcome) -> int:
        return int(self.counts.get(outcome.value, 0))

    @property
    def published(self) -> int:
        return sum(self[o] for o in PUBLISHED)

    @property
    def decided(self) -> int:
        return self[RowOutcome.PROCESSED] + self[RowOutcome.FAILED_AGAIN]


class Outcomes:
    """The outcome writes and reads of the DLQ store (facts, so no lease needed: a look
    only moves rows from undecided to decided)."""

    engine: Engine

    def record_processed(self, replay_id: str) -> int:
        """Mark the run's pending rows whose copy was processed; return how many."""
        event = select(DlqEvent.id).where(
            DlqEvent.id == ReplayRunRow.event_id,
            replayed_copy_processed(ReplayRunRow.replay_id),
        )
        stmt = (
            update(ReplayRunRow)
            .where(
                ReplayRunRow.replay_id == replay_id,
                ReplayRunRow.outcome == RowOutcome.PENDING,
                exists(event),
            )
            .values(outcome=RowOutcome.PROCESSED.value, decided_at=utcnow())
        )
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount or 0)

    def record_failed(
        self, replay_id: str, failures: Sequence[Failure], positions: Mapping[str, int]
    ) -> int:
        """Fold dead letters of the run's copies to the rows they replay and move the
        run's DLQ positions past them, in one transaction; return the rows decided.

        A row still ``queued`` is decided too: a dead letter naming this run is proof
        that its copy was published (its run died before recording it).
        """
        now = utcnow()
        decided = 0
        with self.engine.begin() as conn:
            for failure in failures:
                topic, partition, offset = failure.lineage
                row = select(DlqEvent.id).where(
                    DlqEvent.dlq_topic == topic,
                    DlqEvent.dlq_partition == partition,
                    DlqEvent.dlq_offset == offset,
                )
                stmt = update(ReplayRunRow).where(
                    ReplayRunRow.replay_id == replay_id,
                    ReplayRunRow.event_id.in_(row),
                    ReplayRunRow.outcome.in_([RowOutcome.QUEUED, RowOutcome.PENDING]),
                )
                trip_topic, trip_partition, trip_offset = failure.trip
                decided += int(conn.execute(stmt.values(
                    outcome=RowOutcome.FAILED_AGAIN.value, note=failure.reason, decided_at=now,
                    trip_topic=trip_topic, trip_partition=trip_partition, trip_offset=trip_offset,
                )).rowcount or 0)  # fmt: skip
            conn.execute(update(ReplayRun).where(ReplayRun.replay_id == replay_id).values(
                dlq_positions=dict(positions)))  # fmt: skip
        return decided

    def tally(self, replay_id: str) -> Tally:
        """The run's rows by outcome, as stored now."""
        mine = ReplayRunRow.replay_id == replay_id
        by_outcome = select(ReplayRunRow.outcome, func.count()).where(mine)
        failed = mine & (ReplayRunRow.outcome == RowOutcome.FAILED_AGAIN)
        n = func.count().label("n")
        reasons = select(ReplayRunRow.note, n).where(failed).group_by(ReplayRunRow.note)
        oldest = (
            select(func.min(DlqEvent.replayed_at))
            .join(ReplayRunRow, ReplayRunRow.event_id == DlqEvent.id)
            .where(mine, ReplayRunRow.outcome == RowOutcome.PENDING)
        )
        with self.engine.connect() as conn:
            counts = {str(o): int(c) for o, c in conn.execute(by_outcome.group_by(
                ReplayRunRow.outcome))}  # fmt: skip
            why = {str(r or "no reason given"): int(c) for r, c in conn.execute(
                reasons.order_by(n.desc(), ReplayRunRow.note))}  # fmt: skip
            at = conn.scalar(oldest)
        return Tally(counts, why, as_utc(at) if at is not None else None)


# -- reading the DLQ -----------------------------------------------------------------------


def dlq_ends(consumer: Consumer, topic: str, timeout_s: float) -> dict[str, int]:
    """Where each partition of the DLQ topic ends now: a run looks for its copies'
    dead letters from there (they are written after it publishes them).

    Raises:
        BrokerError: the topic's partitions or ends could not be read within ``timeout_s``.
    """
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BrokerError(f"cannot read the partitions of {topic}: {meta and meta.error}")
        return {
            str(p): int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)[1])
            for p in sorted(meta.partitions)
        }
    except Exception as exc:  # KafkaException and friends: one line
        if isinstance(exc, BrokerError):
            raise
        raise BrokerError(f"cannot read where {topic} ends: {exc}") from exc


def scan_dlq(
    consumer: Consumer,
    topic: str,
    replay_id: str,
    positions: Mapping[str, int],
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[Failure], dict[str, int]]:
    """The dead letters naming ``replay_id`` from ``positions`` to the end (or as far as
    ``timeout_s`` allowed), and the positions after them.

    Raises:
        BrokerError: the topic cannot be read.
    """
    ends = dlq_ends(consumer, topic, timeout_s)
    at = {p: int(positions.get(p, 0)) for p in ends}
    todo = {p for p in ends if at[p] < ends[p]}
    if not todo:
        return [], at
    consumer.assign([TopicPartition(topic, int(p), at[p]) for p in sorted(todo)])
    found: list[Failure] = []
    deadline = clock() + timeout_s
    while todo and clock() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            part = str(msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at[part] = max(at[part], int(msg.offset() or 0))
                    todo.discard(part)
                    continue
                raise BrokerError(f"cannot read {topic}: {err.str()}")
            at[part] = int(msg.offset() or 0) + 1
            failure = _failure_of(msg, replay_id)
            if failure is not None:
                found.append(failure)
    return found, at


def _failure_of(msg: Message, replay_id: str) -> Failure | None:
    """The dead letter of a copy this run published, or None (headers are untrusted: a
    forged one can only decide a row of this run as failed, the safe way round)."""
    record = Record.of(msg)
    if h.text(record.headers, h.REPLAY_ID) != replay_id:
        return None
    topic = h.text(record.headers, h.REPLAY_DLQ_TOPIC)
    partition = h.integer(record.headers, h.REPLAY_DLQ_PARTITION)
    offset = h.integer(record.headers, h.REPLAY_DLQ_OFFSET)
    if topic is None or partition is None or offset is None:
        return None
    reason = str(event_row(record, drained_at=utcnow())["reason"])
    return Failure((topic, partition, offset), reason, (record.topic, record.partition,
                                                        record.offset))  # fmt: skip


def look(
    store: Outcomes,
    replay_id: str,
    *,
    reader: Callable[[], Consumer] | None,
    dlq_topic: str | None,
    timeout_s: float = 30.0,
) -> Tally:
    """Decide what can be decided of the run's published rows now; return its tally.

    Without a ``reader`` (``orderproc dlq show``, the review page) only the store is
    looked at: processed copies are decided, failures wait for a look that reads the DLQ.
    """
    store.record_processed(replay_id)
    if reader is not None and dlq_topic:
        run = _run(store, replay_id)
        if run is not None:
            since = run.dlq_positions or {}
            with closing(reader()) as consumer:
                failures, positions = scan_dlq(consumer, dlq_topic, replay_id, since,
                                               timeout_s=timeout_s)  # fmt: skip
            store.record_failed(replay_id, failures, positions)
    return store.tally(replay_id)


def _run(store: Outcomes, replay_id: str) -> ReplayRun | None:
    with Session(store.engine, expire_on_commit=False) as session:
        return session.get(ReplayRun, replay_id)


def reasons_said(reasons: Mapping[str, int]) -> str:
    """``Simulated error: high price`` or ``X (7), Y (2) and 1 other``: why copies failed."""
    top = Counter(reasons).most_common()
    if len(top) == 1:
        return f"`{top[0][0]}`"
    shown = ", ".join(f"`{r}` ({n})" for r, n in top[:2])
    rest = len(top) - 2
    return shown + (f" and {rest} other reason(s)" if rest > 0 else "")
