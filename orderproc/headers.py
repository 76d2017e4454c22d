"""Every Kafka header orderproc writes or reads, and the one way to write and read them.

Two families:

* **Provenance** (``orderproc.*``): written by the consumer on every retry and DLQ
  record. On each hop the previous copies are dropped and fresh ones written, so a
  record never carries two values of the same provenance header.
* **Replay lineage** (``replay.*``): written by the replay on each republished order.
  They are *not* prefixed ``orderproc.``, so the consumer treats them as the record's
  own headers and keeps them across later retry and DLQ hops; the drain reads
  ``replay.count`` back from a DLQ record to enforce the replay cap.

Header values are bytes; numbers are ASCII decimal. A header that is missing,
empty or not a number reads as ``None``: headers are untrusted input.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

Header = tuple[str, bytes]
"""A header as orderproc handles it: name and value, the value never ``None``."""

NONE: list[Header] = []
"""The headers of a record that has none, shared (never modified: every writer copies)."""

PREFIX = "orderproc."
"""Every provenance header starts with this."""

ERROR_CLASS = PREFIX + "error.class"
ERROR_CATEGORY = PREFIX + "error.category"
ERROR_RETRYABLE = PREFIX + "error.retryable"
ERROR_MESSAGE = PREFIX + "error.message"
ATTEMPTS = PREFIX + "attempts"
FIRST_FAILURE_MS = PREFIX + "first.failure.ms"
LAST_FAILURE_MS = PREFIX + "last.failure.ms"
SOURCE_TOPIC = PREFIX + "source.topic"
SOURCE_PARTITION = PREFIX + "source.partition"
SOURCE_OFFSET = PREFIX + "source.offset"
SOURCE_TIMESTAMP_MS = PREFIX + "source.timestamp.ms"
CONSUMER_GROUP = PREFIX + "consumer.group"
RETRY_DUE_MS = PREFIX + "retry.due.ms"
"""On retry-topic records only: when (epoch ms) the next attempt is due."""

REPLAY_ID = "replay.id"
REPLAY_COUNT = "replay.count"
REPLAY_DLQ_TOPIC = "replay.dlq.topic"
REPLAY_DLQ_PARTITION = "replay.dlq.partition"
REPLAY_DLQ_OFFSET = "replay.dlq.offset"

PROVENANCE = (
    ERROR_CLASS,
    ERROR_CATEGORY,
    ERROR_RETRYABLE,
    ATTEMPTS,
    FIRST_FAILURE_MS,
    LAST_FAILURE_MS,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    SOURCE_TIMESTAMP_MS,
    CONSUMER_GROUP,
    ERROR_MESSAGE,
)
"""The provenance headers, in the order they are written."""

MAX_TEXT = 512
"""Free text in a header (the error message) is cut to this many bytes."""


UNREADABLE = "a header name is not valid UTF-8; the record's headers cannot be read"


def read(msg: Any) -> tuple[list[Header], str | None]:
    """The headers of a ``confluent_kafka.Message``, read exactly once: ``(headers, problem)``.

    confluent-kafka (2.16) cannot represent a header *name* that is not valid UTF-8: its
    C code puts a NULL where the name should be, leaves the ``UnicodeDecodeError`` set,
    returns the list anyway and caches it on the message. Called through Python's
    generic call path that becomes a ``SystemError``; but a plain ``msg.headers()`` in a
    hot loop is specialised by CPython 3.11 into a call that does not check, and the
    NULL then crashes the interpreter (seen here: segfault after a few dozen such
    records). So this is the only place that calls ``headers()``: once per message,
    through ``operator.methodcaller`` (always the checked path). An unreadable record
    gets no headers and a ``problem`` to dead-letter it with.
    """
    try:
        raw = _HEADERS(msg)
    except (SystemError, UnicodeDecodeError, ValueError):
        return [], UNREADABLE
    return (normalize(raw) if raw else NONE), None


_HEADERS = operator.methodcaller("headers")


def normalize(raw: Any) -> list[Header]:
    """Kafka message headers (list or dict, ``None`` values allowed) as ``(name, bytes)`` pairs."""
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in items]


def foreign(headers: Iterable[Header] | None) -> list[Header]:
    """The record's own headers, without any provenance copy from an earlier hop."""
    return [(k, v) for k, v in headers or () if not k.startswith(PREFIX)]


def size(headers: Iterable[Header]) -> int:
    """The bytes ``headers`` take in a record: names (UTF-8) and values."""
    return sum(len(k.encode()) + len(v) for k, v in headers)


def text_map(headers: Sequence[Header] | None) -> dict[str, str]:
    """Every header as text, keyed by its full name (the last value wins)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers or () if v is not None}


def text(headers: Sequence[Header] | None, name: str) -> str | None:
    """The first non-empty value of header ``name`` as text."""
    for key, value in headers or ():
        if key == name and value:
            return value.decode("utf-8", "replace")
    return None


def first_values(headers: Sequence[Header] | None) -> dict[str, bytes]:
    """Each header's first non-empty value, by name, in one pass (``text``/``integer``
    scan the list once per name)."""
    found: dict[str, bytes] = {}
    for key, value in headers or ():
        if value and key not in found:
            found[key] = value
    return found


def integer(headers: Sequence[Header] | None, name: str) -> int | None:
    """The first non-empty value of header ``name`` as an integer (``None`` if not one)."""
    value = text(headers, name)
    return parse_int(value)


def parse_int(value: Any) -> int | None:
    """An integer from text, ASCII bytes or a number; ``None`` for anything else (booleans
    included)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def clip(value: str, limit: int = MAX_TEXT) -> bytes:
    """``value`` as UTF-8, cut at a character boundary to at most ``limit`` bytes."""
    data = value.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode() + b"..."


def number(value: int) -> bytes:
    """An integer header value."""
    return b"%d" % value
