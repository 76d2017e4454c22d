"""A consumed record and its headers: never an exception, a damaged header reads as absent."""

from __future__ import annotations

from typing import Any

import pytest

from orderproc.models import Source
from orderproc.records import Provenance, Record

pytestmark = pytest.mark.unit


class Msg:
    """The accessors of a ``confluent_kafka.Message`` that ``Record.of`` calls."""

    def __init__(self, headers: Any = None, timestamp: tuple[int, int] = (1, 1_700_000_000_000)):
        self._headers, self._timestamp = headers, timestamp

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 31

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> Any:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp


def record(headers: list[tuple[str, bytes]]) -> Record:
    return Record("orders.retry.1", 0, 5, None, b"v", headers, 1_700_000_000_000)


PROVENANCE = [
    ("orderproc.attempts", b"2"),
    ("orderproc.first.failure.ms", b"1699999999000"),
    ("orderproc.source.topic", b"orders"),
    ("orderproc.source.partition", b"1"),
    ("orderproc.source.offset", b"17"),
    ("orderproc.source.timestamp.ms", b"1699999998000"),
]


def test_of_copies_a_message_with_none_header_values_as_empty_bytes() -> None:
    rec = Record.of(Msg(headers=[("trace", None), ("a", b"1")]))

    assert (rec.topic, rec.partition, rec.offset, rec.key, rec.value) == (
        "orders",
        2,
        31,
        b"k",
        b"v",
    )
    assert rec.headers == [("trace", b""), ("a", b"1")]
    assert rec.timestamp_ms == 1_700_000_000_000
    assert rec.tp == ("orders", 2)
    assert rec.coordinates == "orders[2]@31"


def test_a_message_without_a_timestamp_has_none() -> None:
    assert Record.of(Msg(timestamp=(0, -1))).timestamp_ms is None


def test_provenance_of_a_retry_record() -> None:
    assert record(PROVENANCE).provenance() == Provenance(
        2, 1699999999000, Source("orders", 1, 17, 1699999998000)
    )


def test_a_record_without_provenance_is_its_own_source() -> None:
    assert record([("trace", b"x")]).provenance() == Provenance(
        0, None, Source("orders.retry.1", 0, 5, 1_700_000_000_000)
    )


@pytest.mark.parametrize(
    "damage",
    [
        ("orderproc.attempts", b"two"),
        ("orderproc.source.partition", b""),
        ("orderproc.source.offset", b"\xff\xfe"),
    ],
)
def test_damaged_provenance_reads_as_none_rather_than_raise(damage: tuple[str, bytes]) -> None:
    headers = [(k, v) for k, v in PROVENANCE if k != damage[0]] + [damage]

    assert record(headers).provenance().attempts == 0


def test_due_time_and_replay_id() -> None:
    rec = record([("orderproc.retry.due.ms", b"1700000009000"), ("replay.id", b"manual__1")])

    assert rec.retry_due_ms == 1_700_000_009_000
    assert rec.replay_id == "manual__1"
    assert record([("orderproc.retry.due.ms", b"soon")]).retry_due_ms is None
