"""Drain the dead-letter topic into the DLQ store, bounded per run.

Delivery semantics (every DLQ record stored exactly once):

* Auto-commit is off. A batch's offsets are committed synchronously only after the
  database transaction that stored the batch has committed.
* A crash between the two re-reads the batch on the next run; the store ignores
  records whose DLQ coordinates (topic, partition, offset) it already has, so
  nothing is stored twice and nothing is lost.
* A run ends when every partition has reached the end offset it had when the run
  started (or after ``max_messages``); it never ends on an empty poll, so an
  unreachable broker fails the run instead of looking like an empty queue.

Records are parsed defensively (``orderproc.dlq.envelope.event_row``): a value that
is not our JSON envelope still gets a row (category ``unknown``, raw value kept).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from orderproc.clock import utcnow
from orderproc.config import Settings
from orderproc.dlq.envelope import event_row, raw_event_row
from orderproc.dlq.intake import Stored
from orderproc.dlq.store import DlqStore
from orderproc.errors import BrokerError, DrainError
from orderproc.kafka.access import check_access, drain_access
from orderproc.kafka.clients import drain_consumer_config, refuses_access
from orderproc.records import Record
from orderproc.store.engine import open_engine
from orderproc.store.isolate import write_isolating

log = logging.getLogger(__name__)


@dataclass
class DrainResult:
    """What one drain run did."""

    consumed: int = 0
    inserted: int = 0
    """New failures: review rows created."""
    copies: int = 0
    """Records that were another copy of a failure already stored (counted on its row)."""
    duplicates: int = 0
    """Records read again (already stored: their offsets had not been committed)."""
    caught_up: bool = False
    committed: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "inserted": self.inserted,
            "copies": self.copies,
            "duplicates": self.duplicates,
            "caught_up": self.caught_up,
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
        }


AfterCommit = Callable[[Sequence[Record]], None]


def drain(
    consumer: Consumer,
    store: DlqStore,
    topic: str,
    *,
    max_messages: int | None = None,
    batch_size: int = 500,
    poll_timeout_s: float = 1.0,
    metadata_timeout_s: float = 10.0,
    stall_timeout_s: float = 60.0,
    actor: str = "drain",
    after_db_commit: AfterCommit | None = None,
    store_step: Callable[[str], None] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> DrainResult:
    """Store the DLQ records of ``topic`` until caught up (or ``max_messages``).

    ``consumer`` must not be subscribed: the drain assigns the partitions itself (it
    joins no group, so no rebalance takes them away mid-run) and leaves closing it to
    the caller. Another drain may run at the same time (the DAG and the command line):
    both store what they read, one row per failure, and each commits its offsets.
    ``after_db_commit`` runs between the database commit and the offset commit,
    ``store_step`` at the steps of each batch's database transaction
    (``Intake.insert_events``): seams for tests of crashes and races.

    Raises:
        DrainError: the broker is unreachable, the topic is missing, no progress was
            made for ``stall_timeout_s``, or an offset commit failed.
    """
    partitions = _partitions(consumer, topic, metadata_timeout_s)
    targets = _end_offsets(consumer, topic, partitions, metadata_timeout_s)
    result = DrainResult()
    if not targets:
        result.caught_up = True
        log.info("drain topic=%s already caught up", topic)
        return result
    # Committed offsets (or the reset policy) decide where each partition starts.
    consumer.assign([TopicPartition(topic, p) for p in targets])
    last_progress = time.monotonic()
    while targets and (max_messages is None or result.consumed < max_messages):
        want = (
            batch_size if max_messages is None else min(batch_size, max_messages - result.consumed)
        )
        records = _take(consumer.consume(want, timeout=poll_timeout_s), targets)
        if records:
            _store_and_commit(consumer, store, records, result, actor, after_db_commit,
                              store_step, sleep)  # fmt: skip
            for r in records:
                if r.offset + 1 >= targets.get(r.partition, math.inf):
                    targets.pop(r.partition, None)
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout_s:
            raise DrainError(
                f"no progress draining {topic} for {stall_timeout_s:.0f}s; "
                f"{len(targets)} partition(s) not caught up"
            )
    result.caught_up = not targets
    log.info(
        "drain topic=%s consumed=%d inserted=%d copies=%d duplicates=%d caught_up=%s",
        topic, result.consumed, result.inserted, result.copies, result.duplicates,
        result.caught_up,
    )  # fmt: skip
    return result


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise DrainError(f"cannot reach Kafka to drain {topic}: {exc.args[0]}") from exc
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        why = info.error.str() if info is not None and info.error is not None else "no partitions"
        raise DrainError(f"DLQ topic {topic} is not available: {why}")
    return sorted(info.partitions)


def _end_offsets(
    consumer: Consumer, topic: str, partitions: list[int], timeout_s: float
) -> dict[int, int]:
    """High watermarks of the partitions that have records past their committed offset."""
    tps = [TopicPartition(topic, p) for p in partitions]
    try:
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=timeout_s)}
        targets: dict[int, int] = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            start = committed.get(tp.partition, -1)
            if high > max(low, start):
                targets[tp.partition] = high
    except KafkaException as exc:
        raise DrainError(f"cannot read offsets of {topic}: {exc.args[0]}") from exc
    return targets


def _take(messages: list[Message], targets: dict[int, int]) -> list[Record]:
    records = []
    for msg in messages:
        err: KafkaError | None = msg.error()
        if err is None:
            records.append(Record.of(msg))
        elif err.code() == KafkaError._PARTITION_EOF:
            targets.pop(msg.partition() or 0, None)  # nothing left past what we have read
        elif err.fatal() or refuses_access(err):
            # Kafka refused us (or the client is dead): stop before anything is committed.
            raise DrainError(f"Kafka refused the drain's consumer: {err.str()}")
        else:
            log.warning("consumer error on %s: %s", msg.topic(), err.str())
    return records


def _store_and_commit(
    consumer: Consumer,
    store: DlqStore,
    records: list[Record],
    result: DrainResult,
    actor: str,
    after_db_commit: AfterCommit | None,
    store_step: Callable[[str], None] | None,
    sleep: Callable[[float], Any],
) -> None:
    stored = _store(store, records, actor, store_step)
    result.consumed += len(records)
    result.inserted += len(stored.new_ids)
    result.copies += stored.copies
    result.duplicates += stored.reread
    if after_db_commit is not None:
        after_db_commit(records)
    # Safe to move the offsets now: the rows are committed. If this commit is lost,
    # the next run re-reads the records and the store ignores them as duplicates.
    next_offsets: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        next_offsets[key] = max(next_offsets.get(key, 0), r.offset + 1)
    offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
    commit_offsets(consumer, offsets, sleep=sleep)
    result.committed.update({p: o for (_, p), o in next_offsets.items()})


PASSING = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)
"""Commit errors that pass: the group's coordinator moved, loads or rebalances."""

COMMIT_TRIES = 10


def commit_offsets(
    consumer: Consumer, offsets: list[TopicPartition], *, sleep: Callable[[float], Any]
) -> None:
    """Commit the offsets of stored records, asking again while the broker says the
    group's coordinator is moving or the group rebalances (a commit repeated is the same
    commit). Only a refusal that stays is the run's failure: the records are stored, and
    a run that ended there reads them again and stores nothing twice.

    Raises:
        DrainError: the commit was refused for good, or still passing errors after
            ``COMMIT_TRIES`` tries.
    """
    why = ""
    for attempt in range(COMMIT_TRIES):
        try:
            done = consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if not _passing(err):
                raise DrainError(f"offset commit failed (records are stored): {err}") from exc
            why = err.str()
        else:
            failed = [tp for tp in done if tp.error is not None]
            if not failed:
                return
            if not all(_passing(tp.error) for tp in failed):
                tp = failed[0]
                raise DrainError(
                    f"offset commit failed for {tp.topic}[{tp.partition}] (records are "
                    f"stored): {tp.error}"
                )
            why = str(failed[0].error)
        log.warning("offset commit passed over (%s); asking again", why)
        sleep(min(0.2 * 2**attempt, 5.0))
    raise DrainError(f"offset commit failed {COMMIT_TRIES} times (records are stored): {why}")


def _passing(err: KafkaError | None) -> bool:
    return err is not None and (err.code() in PASSING or err.retriable())


def _store(
    store: DlqStore,
    records: list[Record],
    actor: str,
    step: Callable[[str], None] | None = None,
) -> Stored:
    """Store the rows of ``records``; a row the database refuses is stored raw instead.

    One bad record never fails a run: its parsed row is isolated (``write_isolating``)
    and replaced by a row holding only its coordinates and raw bytes.
    """
    now = utcnow()
    rows = [event_row(r, drained_at=now) for r in records]
    written, refused = write_isolating(
        rows, lambda part: store.insert_events(part, actor=actor, step=step)
    )
    stored = sum(written, Stored())
    for row, exc in refused:
        log.warning("dlq record %s[%s]@%s kept raw: %s",
                    row["dlq_topic"], row["dlq_partition"], row["dlq_offset"], exc)  # fmt: skip
        stored += store.insert_events([raw_event_row(row, str(exc))], actor=actor)
    return stored


def run_drain(
    settings: Settings,
    *,
    consumer: Consumer | None = None,
    database_url: str | None = None,
    max_messages: int | None = None,
    metadata_timeout_s: float = 10.0,
    actor: str = "drain",
    after_db_commit: AfterCommit | None = None,
    store_step: Callable[[str], None] | None = None,
) -> DrainResult:
    """Drain ``settings.dlq_topic`` into the store; closes the consumer and the engine.

    Without ``consumer`` one is built from the settings (the CLI and tests), once
    Kafka has accepted the credentials, the certificate and the drain's ACLs within
    ``metadata_timeout_s`` (a ``DrainError`` otherwise); Airflow passes one built from
    its ``kafka_default`` connection (``orderproc.airflow.hooks``, which checks the same).
    """
    if consumer is None:
        try:
            check_access(settings.kafka_config(), drain_access(settings), metadata_timeout_s)
        except BrokerError as exc:
            raise DrainError(str(exc)) from exc
        consumer = Consumer(drain_consumer_config(settings))
    try:
        with open_engine(database_url or settings.effective_database_url) as engine:
            return drain(
                consumer,
                DlqStore(engine),
                settings.dlq_topic,
                max_messages=max_messages,
                batch_size=settings.batch_size,
                metadata_timeout_s=metadata_timeout_s,
                actor=actor,
                after_db_commit=after_db_commit,
                store_step=store_step,
            )
    finally:
        consumer.close()
