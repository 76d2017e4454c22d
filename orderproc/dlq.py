"""The dead-letter envelope and the provenance headers that travel with a failing order.

The JSON value stays compatible with the original system (``failed_order`` and
``reason``) and adds everything an operator needs to judge and replay the order.
Its schema is ``schemas/dlq_envelope.schema.json``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orderproc.errors import ErrorCategory, ProcessingError
from orderproc.models import Order, Source

ENVELOPE_VERSION = 1

HEADER_PREFIX = "orderproc."
"""Every header we write starts with this; earlier hops' copies are replaced, not appended."""

MAX_HEADER_TEXT = 512
"""Error messages in headers are cut to this many bytes: headers must stay small."""

Header = tuple[str, bytes]


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


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


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


def _clip(text: str, limit: int = MAX_HEADER_TEXT) -> bytes:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode() + b"..."


_PROVENANCE_KEYS = tuple(
    HEADER_PREFIX + name
    for name in (
        "error.class",
        "error.category",
        "error.retryable",
        "attempts",
        "first.failure.ms",
        "last.failure.ms",
        "source.topic",
        "source.partition",
        "source.offset",
        "source.timestamp.ms",
        "consumer.group",
        "error.message",
    )
)


def provenance_headers(failure: Failure) -> list[Header]:
    """Headers describing the failure; bounded in size whatever the error says."""
    src, error = failure.source, failure.error
    values = (
        _clip(error_class_name(error), 200),
        error.category.value.encode(),
        b"true" if error.retryable else b"false",
        b"%d" % failure.attempts,
        b"%d" % failure.first_failure_ms,
        b"%d" % failure.last_failure_ms,
        _clip(src.topic, 249),
        b"%d" % src.partition,
        b"%d" % src.offset,
        b"" if src.timestamp_ms is None else b"%d" % src.timestamp_ms,
        _clip(failure.consumer_group, 249),
        _clip(failure.reason),
    )
    return list(zip(_PROVENANCE_KEYS, values, strict=True))


def normalize_headers(raw: Any) -> list[Header]:
    """Kafka message headers (list or dict, None values allowed) as ``(name, bytes)`` pairs."""
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in items]


def foreign_headers(headers: Iterable[Header] | None) -> list[Header]:
    """The record's own headers, without any copy of ours from an earlier hop."""
    return [(k, v) for k, v in headers or () if not k.startswith(HEADER_PREFIX)]


def header_map(headers: Sequence[Header] | None) -> dict[str, str]:
    """Our headers as text, keyed without the prefix (last value wins)."""
    result: dict[str, str] = {}
    for key, value in headers or ():
        if key.startswith(HEADER_PREFIX) and value is not None:
            result[key[len(HEADER_PREFIX) :]] = value.decode("utf-8", "replace")
    return result
