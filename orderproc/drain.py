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

Records are parsed defensively: a value that is not our JSON envelope still gets a
row (category ``unknown``, raw value kept), with whatever our headers tell.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from orderproc.config import Settings
from orderproc.dlq import Header, header_map
from orderproc.errors import ErrorCategory, OrderProcError
from orderproc.store.engine import make_engine
from orderproc.store.review import DlqStore, utcnow
from orderproc.store.tables import DlqStatus

log = logging.getLogger(__name__)

MAX_REASON = 4000
"""Reasons longer than this are cut: a foreign value can say anything."""

REPLAY_COUNT_HEADER = "replay.count"
"""Written by the replay on every republished order; survives the retry/DLQ hops."""


class DrainError(OrderProcError):
    """The DLQ could not be drained (broker unreachable, topic missing, commit failed)."""


def drain_group(settings: Settings) -> str:
    """The drain's own consumer group: independent of ``orderproc dlq tail``'s group."""
    return f"{settings.dlq_group}.drain"


def drain_consumer_overrides(settings: Settings) -> dict[str, Any]:
    """Consumer settings the drain relies on, applied over any connection config."""
    return {
        "group.id": drain_group(settings),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }


# -- parsing one DLQ record ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """The parts of a consumed DLQ record the store needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header] = ()

    @classmethod
    def from_message(cls, msg: Message) -> DlqRecord:
        raw_headers = msg.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers = tuple(
            (k, v.encode() if isinstance(v, str) else v) for k, v in pairs if v is not None
        )
        key, value = msg.key(), msg.value()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=headers,
        )


def event_row(record: DlqRecord, *, drained_at: datetime) -> dict[str, Any]:
    """Column values of the ``dlq_events`` row for one DLQ record; never raises.

    ``raw_value`` keeps the DLQ value byte for byte, whatever it is.
    """
    envelope, problem = parse_envelope(record.value)
    meta = header_map(list(record.headers))
    key = record.key.decode("utf-8", "replace") if record.key else None
    return {
        "dlq_topic": record.topic,
        "dlq_partition": record.partition,
        "dlq_offset": record.offset,
        "message_key": _clip(key, 400),
        "raw_value": record.value,
        "envelope": envelope or None,
        "drained_at": drained_at,
        "status": DlqStatus.NEW.value,
        "replay_count": _replay_count(record.headers),
        **_order_fields(_dict(envelope.get("failed_order"))),
        **_failure_fields(envelope, meta, problem),
        **_source_fields(envelope, meta),
    }


def _order_fields(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": _clip(_text(order.get("orderId")), 200),
        "product": _clip(_text(order.get("product")), 200),
        "price": _number(order.get("price")),
    }


def _failure_fields(
    envelope: dict[str, Any], meta: dict[str, str], problem: str | None
) -> dict[str, Any]:
    error = _dict(envelope.get("error"))
    reason = _text(envelope.get("reason")) or _text(error.get("message"))
    if problem:
        told = meta.get("error.message")
        reason = f"{problem}; header says: {told}" if told else problem
    return {
        "reason": _clip(reason, MAX_REASON) or "no reason given",
        "error_class": _clip(_text(error.get("class")) or meta.get("error.class"), 200),
        "category": _category(error.get("category"), problem),
        "retryable": _flag(error.get("retryable", meta.get("error.retryable"))),
        "attempts": _int(envelope.get("attempts", meta.get("attempts"))) or 0,
        "first_failure_at": _time(envelope.get("first_failure_at"))
        or _from_ms(meta.get("first.failure.ms")),
        "last_failure_at": _time(envelope.get("last_failure_at"))
        or _from_ms(meta.get("last.failure.ms")),
        "dead_lettered_at": _time(envelope.get("dead_lettered_at")),
    }


def _source_fields(envelope: dict[str, Any], meta: dict[str, str]) -> dict[str, Any]:
    source = _dict(envelope.get("source"))
    group = _text(envelope.get("consumer_group")) or meta.get("consumer.group")
    return {
        "consumer_group": _clip(group, 249),
        "source_topic": _clip(_text(source.get("topic")) or meta.get("source.topic"), 249),
        "source_partition": _int(source.get("partition", meta.get("source.partition"))),
        "source_offset": _int(source.get("offset", meta.get("source.offset"))),
        "source_timestamp": _from_ms(source.get("timestamp", meta.get("source.timestamp.ms"))),
    }


def parse_envelope(value: bytes | None) -> tuple[dict[str, Any], str | None]:
    """The JSON envelope, or ``({}, why)`` when the value is not one."""
    if not value:
        return {}, "empty DLQ value"
    try:
        parsed = json.loads(value, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        return {}, f"DLQ value is not JSON ({type(exc).__name__})"
    if not isinstance(parsed, dict) or not ("failed_order" in parsed or "reason" in parsed):
        return {}, "DLQ value is not an orderproc envelope"
    return parsed, None


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON and PostgreSQL's json type refuses them.
    raise ValueError(f"{name} is not JSON")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _clip(value: str | None, limit: int) -> str | None:
    # PostgreSQL text cannot hold NUL characters; a foreign record must not block the drain.
    return value.replace("\x00", "")[:limit] if value is not None else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _category(value: Any, problem: str | None) -> str:
    known = {c.value for c in ErrorCategory}
    if problem is None and isinstance(value, str) and value in known:
        return value
    return ErrorCategory.UNKNOWN.value


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _from_ms(value: Any) -> datetime | None:
    ms = _int(value)
    if ms is None or ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _replay_count(headers: Sequence[Header]) -> int:
    for key, value in headers:
        if key == REPLAY_COUNT_HEADER and value:
            count = _int(value.decode("utf-8", "replace"))
            return max(count or 0, 0)
    return 0


# -- the bounded drain loop --------------------------------------------------------------


@dataclass
class DrainResult:
    """What one drain run did."""

    consumed: int = 0
    inserted: int = 0
    duplicates: int = 0
    caught_up: bool = False
    committed: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "caught_up": self.caught_up,
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
        }


AfterCommit = Callable[[Sequence[DlqRecord]], None]


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
) -> DrainResult:
    """Store the DLQ records of ``topic`` until caught up (or ``max_messages``).

    ``consumer`` must not be subscribed: the drain assigns the partitions itself
    and leaves closing it to the caller. ``after_db_commit`` runs between the
    database commit and the offset commit (a seam for crash tests).

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
            _store_and_commit(consumer, store, records, result, actor, after_db_commit)
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
        "drain topic=%s consumed=%d inserted=%d duplicates=%d caught_up=%s",
        topic, result.consumed, result.inserted, result.duplicates, result.caught_up,
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


def _take(messages: list[Message], targets: dict[int, int]) -> list[DlqRecord]:
    records = []
    for msg in messages:
        err: KafkaError | None = msg.error()
        if err is None:
            records.append(DlqRecord.from_message(msg))
        elif err.code() == KafkaError._PARTITION_EOF:
            targets.pop(msg.partition() or 0, None)  # nothing left past what we have read
        elif err.fatal():
            raise DrainError(f"fatal consumer error: {err.str()}")
        else:
            log.warning("consumer error on %s: %s", msg.topic(), err.str())
    return records


def _store_and_commit(
    consumer: Consumer,
    store: DlqStore,
    records: list[DlqRecord],
    result: DrainResult,
    actor: str,
    after_db_commit: AfterCommit | None,
) -> None:
    now = utcnow()
    inserted = store.insert_events([event_row(r, drained_at=now) for r in records], actor=actor)
    result.consumed += len(records)
    result.inserted += len(inserted)
    result.duplicates += len(records) - len(inserted)
    if after_db_commit is not None:
        after_db_commit(records)
    # Safe to move the offsets now: the rows are committed. If this commit is lost,
    # the next run re-reads the records and the store ignores them as duplicates.
    next_offsets: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        next_offsets[key] = max(next_offsets.get(key, 0), r.offset + 1)
    offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
    try:
        done = consumer.commit(offsets=offsets, asynchronous=False) or []
    except KafkaException as exc:
        raise DrainError(f"offset commit failed (records are stored): {exc.args[0]}") from exc
    failed = [tp for tp in done if tp.error is not None]
    if failed:
        raise DrainError(f"offset commit failed for {failed[0].topic}[{failed[0].partition}]")
    result.committed.update({p: o for (_, p), o in next_offsets.items()})


def run_drain(
    settings: Settings,
    *,
    consumer: Consumer | None = None,
    database_url: str | None = None,
    max_messages: int | None = None,
    metadata_timeout_s: float = 10.0,
    actor: str = "drain",
    after_db_commit: AfterCommit | None = None,
) -> DrainResult:
    """Drain ``settings.dlq_topic`` into the store; closes the consumer and the engine.

    Without ``consumer`` one is built from the settings (the CLI and tests); Airflow
    passes one built from its ``kafka_default`` connection.
    """
    if consumer is None:
        consumer = Consumer(settings.kafka_config(**drain_consumer_overrides(settings)))
    engine = make_engine(database_url or settings.effective_database_url)
    try:
        return drain(
            consumer,
            DlqStore(engine),
            settings.dlq_topic,
            max_messages=max_messages,
            batch_size=settings.batch_size,
            metadata_timeout_s=metadata_timeout_s,
            actor=actor,
            after_db_commit=after_db_commit,
        )
    finally:
        consumer.close()
        engine.dispose()
