"""A dead letter as it is produced: the envelope, the original key and headers, and the
``orderproc.*`` provenance headers, never larger than the DLQ topic accepts.

``dead_letter`` bounds the record (a hostile key, headers or value cannot make it too large
to write); ``reduced`` is its smallest form, sent when the broker refuses it anyway;
``provenance_headers`` are also what a retry record carries.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from orderproc import headers as h
from orderproc.dlq.envelope import Failure, build_envelope, encode_envelope, error_class_name
from orderproc.headers import Header
from orderproc.models import Source

MAX_KEY_BYTES = 16 * 1024
"""A DLQ record keeps the original key up to this size; a longer one is replaced by its
SHA-256 (hex), so a hostile key cannot make the dead letter too large to write."""

MAX_FOREIGN_HEADER_BYTES = 64 * 1024
"""The original record's own headers travel with it up to this total size."""


class DeadLetterRecord(NamedTuple):
    """A dead letter as it is produced: key, JSON value and headers, within a size limit."""

    key: bytes | None
    value: bytes
    headers: list[Header]

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value) + h.size(self.headers)


def dead_letter(
    failure: Failure,
    headers: list[Header],
    *,
    now_ms: int,
    max_bytes: int,
) -> DeadLetterRecord:
    """The DLQ record for ``failure``, never larger than ``max_bytes``.

    The original key and the record's own headers travel with it, bounded
    (``MAX_KEY_BYTES``, ``MAX_FOREIGN_HEADER_BYTES``). When the whole still does not
    fit, the raw value in the envelope is cut: ``raw_value_truncated`` is set and
    ``raw_value_length``/``raw_value_sha256`` describe the whole value, which can be
    read back from the source coordinates while the topic's retention lasts.
    """
    envelope = build_envelope(failure, now_ms=now_ms)
    key = failure.key
    if key is not None and len(key) > MAX_KEY_BYTES:
        key = hashlib.sha256(key).hexdigest().encode()
        envelope["key_replaced_by_sha256"] = True
    theirs = h.foreign(headers)
    foreign = _bounded(theirs, MAX_FOREIGN_HEADER_BYTES)
    if len(foreign) < len(theirs):
        envelope["headers_dropped"] = len(theirs) - len(foreign)
    record = DeadLetterRecord(key, encode_envelope(envelope), foreign + provenance_headers(failure))
    excess = record.size - max_bytes
    raw_b64 = envelope["raw_value_b64"]
    if excess > 0 and raw_b64:
        keep = max(0, len(raw_b64) - excess - 64) // 4 * 4  # whole base64 quanta
        envelope["raw_value_b64"] = raw_b64[:keep]
        envelope["raw_value_truncated"] = True
        record = record._replace(value=encode_envelope(envelope))
    return record


def reduced(key: bytes | None, value: bytes, why: str) -> DeadLetterRecord:
    """The smallest form of a dead letter the broker refused (``why``, its reason): no raw
    value and no foreign headers.

    Made from the refused record's key and value alone, which its delivery report carries
    (its headers it does not: ours are written again from the envelope, so the error
    message header has the envelope's reason, without NUL). So a dead letter in flight
    keeps nothing alive (failure, record, headers) until the broker answers.
    """
    envelope = json.loads(value)
    envelope["reduced"] = why[:200]
    if envelope.get("raw_value_b64") is not None:
        envelope["raw_value_b64"] = ""
        envelope["raw_value_truncated"] = True
    error, src = envelope["error"], envelope["source"]
    own = _headers(
        error["class"],
        error["category"],
        error["retryable"],
        envelope["attempts"],
        _epoch_ms(envelope["first_failure_at"]),
        _epoch_ms(envelope["last_failure_at"]),
        Source(src["topic"], src["partition"], src["offset"], src["timestamp"]),
        envelope["consumer_group"],
        envelope["reason"],
    )
    return DeadLetterRecord(key, encode_envelope(envelope), own)


def _epoch_ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _bounded(headers: list[Header], limit: int) -> list[Header]:
    """The first of ``headers`` that fit in ``limit`` bytes."""
    kept: list[Header] = []
    used = 0
    for name, value in headers:
        used += len(name.encode()) + len(value)
        if used > limit:
            break
        kept.append((name, value))
    return kept


def provenance_headers(failure: Failure) -> list[Header]:
    """Headers describing the failure; bounded in size whatever the error says."""
    error = failure.error
    return _headers(
        error_class_name(error),
        error.category.value,
        error.retryable,
        failure.attempts,
        failure.first_failure_ms,
        failure.last_failure_ms,
        failure.source,
        failure.consumer_group,
        failure.reason,
    )


def _headers(
    error_class: str,
    category: str,
    retryable: bool,
    attempts: int,
    first_failure_ms: int,
    last_failure_ms: int,
    src: Source,
    consumer_group: str,
    reason: str,
) -> list[Header]:
    """The provenance headers, in ``headers.PROVENANCE`` order, each value bounded (free
    text cut by ``headers.clip``)."""
    values = (
        h.clip(error_class, 200),
        category.encode(),
        b"true" if retryable else b"false",
        h.number(attempts),
        h.number(first_failure_ms),
        h.number(last_failure_ms),
        h.clip(src.topic, 249),
        h.number(src.partition),
        h.number(src.offset),
        b"" if src.timestamp_ms is None else h.number(src.timestamp_ms),
        h.clip(consumer_group, 249),
        h.clip(reason),
    )
    return list(zip(h.PROVENANCE, values, strict=True))
