"""The dead-letter envelope: how a failure is written to ``orders_dlq``, and read back.

Writer: ``build_envelope``/``encode_envelope`` make the JSON value, compatible with
the original system (``failed_order`` and ``reason``) plus everything an operator
needs to judge and replay the order (``schemas/dlq_envelope.schema.json``);
``orderproc.dlq.letter`` makes the record around it (headers, size bound).

Reader: ``event_row`` turns any record of the DLQ topic into the columns of its
``dlq_events`` row. It never raises: a value that is not our envelope (a foreign or
hand-written record) is kept raw, with whatever its headers tell.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orderproc import headers as h
from orderproc.clock import as_utc, iso_ms
from orderproc.errors import ErrorCategory, ProcessingError
from orderproc.models import DlqStatus, Order, Source
from orderproc.records import Record

ENVELOPE_VERSION = 1

MAX_REASON = 4000
"""Reasons longer than this are cut (written and stored): an error message can say anything."""

MAX_KEY_TEXT = 1000
"""The envelope's ``key`` field shows at most this many characters of the record key."""

MAX_INT32 = 2**31 - 1
MAX_UINT32 = 2**32 - 1
"""The largest schema id the registry wire format can carry (4 bytes, unsigned)."""
MAX_INT64 = 2**63 - 1


def error_class_name(error: ProcessingError) -> str:
    """The class that really failed: the handler's exception if we wrapped one."""
    cause = error.__cause__
    if type(error) is ProcessingError and cause is not None:
        return type(cause).__name__
    return type(error).__name__


@dataclass(slots=True)
class Failure:
    """What is known about a failing record when it is routed to retry or the DLQ."""

    error: ProcessingError
    attempts: int
    first_failure_ms: int
    last_failure_ms: int
    source: Source
    consumer_group: str
    order: Order | None
    raw_value: bytes | None
    key: bytes | None
    schema_id: int | None = None
    """The registry schema id the record named (registry wire format only)."""
    schema_version: str | None = None
    """Where the registry keeps that id, ``orders-value v3``, when it said."""
    delivery_count: int | None = None
    """Queue mode: the share group's delivery count of the record when it failed."""

    @property
    def category(self) -> ErrorCategory:
        return self.error.category

    @property
    def reason(self) -> str:
        return str(self.error) or error_class_name(self.error)


# -- writing -----------------------------------------------------------------------------


def build_envelope(failure: Failure, *, now_ms: int) -> dict[str, Any]:
    """The DLQ record's JSON value, with the raw value whole (see ``dead_letter``)."""
    raw = failure.raw_value if failure.order is None else None
    key = failure.key.decode("utf-8", "replace") if failure.key is not None else None
    error = failure.error
    reason = _clip(failure.reason, MAX_REASON) or ""
    last = iso_ms(failure.last_failure_ms)
    envelope = {
        "failed_order": failure.order.to_record() if failure.order else None,
        "reason": reason,
        "error": {
            "class": error_class_name(error),
            "message": reason,
            "category": error.category.value,
            "retryable": error.retryable,
        },
        "attempts": failure.attempts,
        "first_failure_at": iso_ms(failure.first_failure_ms),
        "last_failure_at": last,
        "dead_lettered_at": last if now_ms == failure.last_failure_ms else iso_ms(now_ms),
        "source": failure.source.to_dict(),
        "key": key[:MAX_KEY_TEXT] if key is not None else None,
        "consumer_group": failure.consumer_group,
        "raw_value_b64": base64.b64encode(raw).decode("ascii") if raw is not None else None,
        "envelope_version": ENVELOPE_VERSION,
    }
    if failure.schema_id is not None:
        envelope["schema_id"] = failure.schema_id
        if failure.schema_version is not None:
            envelope["schema_version"] = failure.schema_version
    if failure.delivery_count is not None:
        envelope["delivery_count"] = failure.delivery_count
    if raw is not None:
        envelope["raw_value_length"] = len(raw)
        envelope["raw_value_sha256"] = hashlib.sha256(raw).hexdigest()
    if key is not None and len(key) > MAX_KEY_TEXT:
        envelope["key_truncated"] = True
    return envelope


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)
"""One encoder for every envelope (``json.dumps`` builds one per call). An envelope is
plain data built by ``build_envelope``: no cycle to look for."""


def encode_envelope(envelope: dict[str, Any]) -> bytes:
    return _ENCODER.encode(envelope).encode()


# -- reading -----------------------------------------------------------------------------


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


def event_row(record: Record, *, drained_at: datetime) -> dict[str, Any]:
    """Column values of the ``dlq_events`` row for one DLQ record; never raises.

    ``raw_value`` keeps the DLQ value byte for byte, whatever it is.
    """
    envelope, problem = parse_envelope(record.value)
    meta = h.text_map(record.headers)
    key = record.key.decode("utf-8", "replace") if record.key else None
    replays = _in_range(h.integer(record.headers, h.REPLAY_COUNT), 0, MAX_INT32) or 0
    source = _source_fields(envelope, meta)
    return {
        "failure_key": failure_key(record, source, replays),
        "dlq_topic": record.topic,
        "dlq_partition": record.partition,
        "dlq_offset": record.offset,
        "message_key": _clip(key, 400),
        "raw_value": record.value,
        "envelope": envelope or None,
        "drained_at": drained_at,
        "status": DlqStatus.NEW.value,
        "replay_count": replays,
        "schema_id": _in_range(envelope.get("schema_id"), 0, MAX_UINT32),
        "schema_version": _clip(_text(envelope.get("schema_version")), 300),
        **_order_fields(_dict(envelope.get("failed_order"))),
        **_failure_fields(envelope, meta, problem),
        **source,
    }


def failure_key(record: Record, source: dict[str, Any], replays: int) -> str:
    """What makes two DLQ records the same failure: the consumer group, the record of the
    orders topic that failed, and its replay lineage. A consumer that crashed before its
    offsets moved dead-letters the same source record again: same key, one review row.
    A record without provenance (foreign, hand-written) is only itself: its DLQ coordinates.
    """
    topic, partition, offset = (source["source_topic"], source["source_partition"],
                                source["source_offset"])  # fmt: skip
    if topic and partition is not None and offset is not None:
        return f"{source['consumer_group'] or ''}|src:{topic}:{partition}:{offset}|r{replays}"
    return f"dlq:{record.topic}:{record.partition}:{record.offset}"


def raw_event_row(row: dict[str, Any], why: str) -> dict[str, Any]:
    """The smallest row for a DLQ record whose parsed row the database refused: its
    coordinates, its raw bytes and why; nothing parsed."""
    keep = ("dlq_topic", "dlq_partition", "dlq_offset", "raw_value", "drained_at", "status")
    return {
        **{k: row[k] for k in keep},
        "failure_key": f"dlq:{row['dlq_topic']}:{row['dlq_partition']}:{row['dlq_offset']}",
        "reason": _clip(f"stored raw: the parsed record was refused ({why})", MAX_REASON),
        "category": ErrorCategory.UNKNOWN.value,
        "retryable": False,
        "attempts": 0,
        "replay_count": 0,
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
        told = meta.get(h.ERROR_MESSAGE)
        reason = f"{problem}; header says: {told}" if told else problem
    return {
        "reason": _clip(reason, MAX_REASON) or "no reason given",
        "error_class": _clip(_text(error.get("class")) or meta.get(h.ERROR_CLASS), 200),
        "category": _category(error.get("category"), problem),
        "retryable": _flag(error.get("retryable", meta.get(h.ERROR_RETRYABLE))),
        "attempts": _in_range(envelope.get("attempts", meta.get(h.ATTEMPTS)), 0, MAX_INT32) or 0,
        "first_failure_at": _time(envelope.get("first_failure_at"))
        or _from_ms(meta.get(h.FIRST_FAILURE_MS)),
        "last_failure_at": _time(envelope.get("last_failure_at"))
        or _from_ms(meta.get(h.LAST_FAILURE_MS)),
        "dead_lettered_at": _time(envelope.get("dead_lettered_at")),
    }


def _source_fields(envelope: dict[str, Any], meta: dict[str, str]) -> dict[str, Any]:
    source = _dict(envelope.get("source"))
    group = _text(envelope.get("consumer_group")) or meta.get(h.CONSUMER_GROUP)
    return {
        "consumer_group": _clip(group, 249),
        "source_topic": _clip(_text(source.get("topic")) or meta.get(h.SOURCE_TOPIC), 249),
        "source_partition": _in_range(
            source.get("partition", meta.get(h.SOURCE_PARTITION)), 0, MAX_INT32
        ),
        "source_offset": _in_range(source.get("offset", meta.get(h.SOURCE_OFFSET)), 0, MAX_INT64),
        "source_timestamp": _from_ms(source.get("timestamp", meta.get(h.SOURCE_TIMESTAMP_MS))),
    }


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON and PostgreSQL's json type refuses them.
    raise ValueError(f"{name} is not JSON")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _clip(value: str | None, limit: int) -> str | None:
    """Text a column can hold: no NUL (PostgreSQL refuses it), no lone surrogate (JSON allows
    one, UTF-8 does not), at most ``limit`` characters. A foreign record must not block the
    drain."""
    if value is None:
        return None
    if len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case, unchanged (measured: a dead letter's reason)
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit]


def _in_range(value: Any, low: int, high: int) -> int | None:
    """An integer the column can hold (Integer: 32-bit, BigInteger: 64-bit), else None."""
    number = h.parse_int(value)
    return number if number is not None and low <= number <= high else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


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
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _from_ms(value: Any) -> datetime | None:
    ms = h.parse_int(value)
    if ms is None or ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
