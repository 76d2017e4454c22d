"""The dead-letter envelope: how a failure is written to ``orders_dlq``, and read back.

Writer: ``build_envelope``/``encode_envelope`` make the JSON value, compatible with
the original system (``failed_order`` and ``reason``) plus everything an operator
needs to judge and replay the order (``schemas/dlq_envelope.schema.json``);
``provenance_headers`` make the bounded ``orderproc.*`` headers that travel with it.

Reader: ``event_row`` turns any record of the DLQ topic into the columns of its
``dlq_events`` row. It never raises: a value that is not our envelope (a foreign or
hand-written record) is kept raw, with whatever its headers tell.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orderproc import headers as h
from orderproc.clock import as_utc, iso_ms
from orderproc.errors import ErrorCategory, ProcessingError
from orderproc.headers import Header
from orderproc.models import DlqStatus, Order, Source
from orderproc.records import Record

ENVELOPE_VERSION = 1

MAX_REASON = 4000
"""Reasons longer than this are cut when stored: a foreign value can say anything."""


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

    @property
    def category(self) -> ErrorCategory:
        return self.error.category

    @property
    def reason(self) -> str:
        return str(self.error) or error_class_name(self.error)


# -- writing -----------------------------------------------------------------------------


def build_envelope(failure: Failure, *, now_ms: int) -> dict[str, Any]:
    """The DLQ record's JSON value."""
    raw_b64 = None
    if failure.order is None and failure.raw_value is not None:
        raw_b64 = base64.b64encode(failure.raw_value).decode("ascii")
    return {
        "failed_order": failure.order.to_record() if failure.order else None,
        "reason": failure.reason,
        "error": {
            "class": error_class_name(failure.error),
            "message": failure.reason,
            "category": failure.category.value,
            "retryable": failure.error.retryable,
        },
        "attempts": failure.attempts,
        "first_failure_at": iso_ms(failure.first_failure_ms),
        "last_failure_at": iso_ms(failure.last_failure_ms),
        "dead_lettered_at": iso_ms(now_ms),
        "source": failure.source.to_dict(),
        "key": failure.key.decode("utf-8", "replace") if failure.key is not None else None,
        "consumer_group": failure.consumer_group,
        "raw_value_b64": raw_b64,
        "envelope_version": ENVELOPE_VERSION,
    }


def encode_envelope(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()


def provenance_headers(failure: Failure) -> list[Header]:
    """Headers describing the failure; bounded in size whatever the error says."""
    src, error = failure.source, failure.error
    values = (
        h.clip(error_class_name(error), 200),
        error.category.value.encode(),
        b"true" if error.retryable else b"false",
        h.number(failure.attempts),
        h.number(failure.first_failure_ms),
        h.number(failure.last_failure_ms),
        h.clip(src.topic, 249),
        h.number(src.partition),
        h.number(src.offset),
        b"" if src.timestamp_ms is None else h.number(src.timestamp_ms),
        h.clip(failure.consumer_group, 249),
        h.clip(failure.reason),
    )
    return list(zip(h.PROVENANCE, values, strict=True))


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
    return {
        "dlq_topic": record.topic,
        "dlq_partition": record.partition,
        "dlq_offset": record.offset,
        "message_key": _clip(key, 400),
        "raw_value": record.value,
        "envelope": envelope or None,
        "drained_at": drained_at,
        "status": DlqStatus.NEW.value,
        "replay_count": max(h.integer(record.headers, h.REPLAY_COUNT) or 0, 0),
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
        told = meta.get(h.ERROR_MESSAGE)
        reason = f"{problem}; header says: {told}" if told else problem
    return {
        "reason": _clip(reason, MAX_REASON) or "no reason given",
        "error_class": _clip(_text(error.get("class")) or meta.get(h.ERROR_CLASS), 200),
        "category": _category(error.get("category"), problem),
        "retryable": _flag(error.get("retryable", meta.get(h.ERROR_RETRYABLE))),
        "attempts": h.parse_int(envelope.get("attempts", meta.get(h.ATTEMPTS))) or 0,
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
        "source_partition": h.parse_int(source.get("partition", meta.get(h.SOURCE_PARTITION))),
        "source_offset": h.parse_int(source.get("offset", meta.get(h.SOURCE_OFFSET))),
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
    # PostgreSQL text cannot hold NUL characters; a foreign record must not block the drain.
    return value.replace("\x00", "")[:limit] if value is not None else None


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
