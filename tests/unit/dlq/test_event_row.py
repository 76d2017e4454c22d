"""Turning DLQ records into store rows: our envelope, and anything else without losing it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orderproc.dlq.envelope import (
    Failure,
    build_envelope,
    encode_envelope,
    event_row,
    parse_envelope,
)
from orderproc.dlq.letter import provenance_headers
from orderproc.errors import BusinessRuleError, DeserializationError
from orderproc.headers import Header
from orderproc.models import Order, Source
from orderproc.records import Record

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _failure(order: Order | None, error: Exception, raw: bytes | None = b"\x01\x02") -> Failure:
    return Failure(
        error=error,  # type: ignore[arg-type]
        attempts=3,
        first_failure_ms=1_772_366_400_000,
        last_failure_ms=1_772_366_401_000,
        source=Source("orders", 2, 41, 1_772_366_399_000),
        consumer_group="order-group",
        order=order,
        raw_value=raw,
        key=b"o-1",
    )


def _record(value: bytes | None, headers: tuple[Header, ...] = ()) -> Record:
    return Record("orders_dlq", 0, 7, b"o-1", value, list(headers))


def test_envelope_fields_become_columns() -> None:
    failure = _failure(
        Order("o-1", "Laptop", 150.0), BusinessRuleError("Simulated error: high price")
    )
    value = encode_envelope(build_envelope(failure, now_ms=1_772_366_402_000))

    row = event_row(_record(value, tuple(provenance_headers(failure))), drained_at=NOW)

    assert (row["dlq_topic"], row["dlq_partition"], row["dlq_offset"]) == ("orders_dlq", 0, 7)
    assert (row["order_id"], row["product"], row["price"]) == ("o-1", "Laptop", 150.0)
    assert row["reason"] == "Simulated error: high price"
    assert (row["error_class"], row["category"], row["retryable"]) == (
        "BusinessRuleError",
        "business_rule",
        True,
    )
    assert row["attempts"] == 3
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == ("orders", 2, 41)
    assert row["consumer_group"] == "order-group"
    assert row["dead_lettered_at"] == datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
    assert row["source_timestamp"] == datetime(2026, 3, 1, 11, 59, 59, tzinfo=UTC)
    assert row["raw_value"] == value
    assert row["status"] == "new"
    assert row["replay_count"] == 0


def test_undecodable_order_keeps_its_category_and_has_no_order_fields() -> None:
    failure = _failure(None, DeserializationError("undecodable Avro", b"\xff"), raw=b"\xff")
    row = event_row(_record(encode_envelope(build_envelope(failure, now_ms=0))), drained_at=NOW)

    assert row["category"] == "deserialization"
    assert row["order_id"] is None and row["price"] is None
    assert row["envelope"]["raw_value_b64"] == "/w=="


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\x00\x01binary", "not JSON"),
        (b'{"price": NaN, "reason": "x"}', "not JSON"),
        (b"[1, 2, 3]", "not an orderproc envelope"),
        (b'{"hello": "world"}', "not an orderproc envelope"),
        (b"", "empty DLQ value"),
        (None, "empty DLQ value"),
    ],
)
def test_a_foreign_value_still_gets_a_row(value: bytes | None, why: str) -> None:
    row = event_row(_record(value), drained_at=NOW)

    assert row["category"] == "unknown"
    assert why in row["reason"]
    assert row["raw_value"] == value
    assert row["envelope"] is None
    assert row["order_id"] is None


def test_foreign_value_uses_our_headers_when_present() -> None:
    failure = _failure(None, DeserializationError("boom", None))
    row = event_row(_record(b"not json", tuple(provenance_headers(failure))), drained_at=NOW)

    assert row["category"] == "unknown"
    assert "header says: boom" in row["reason"]
    assert (row["source_topic"], row["source_offset"], row["attempts"]) == ("orders", 41, 3)


def test_nul_characters_and_wrong_types_cannot_break_the_insert() -> None:
    envelope = {
        "failed_order": {"orderId": "o\x00-1", "product": 5, "price": "12"},
        "reason": "bad\x00reason",
        "error": {"category": "made-up", "retryable": "yes"},
        "attempts": "many",
        "source": {"partition": "x"},
        "first_failure_at": "yesterday",
    }
    row = event_row(_record(json.dumps(envelope).encode()), drained_at=NOW)

    assert row["order_id"] == "o-1"
    assert row["reason"] == "badreason"
    assert row["product"] is None and row["price"] is None
    assert row["category"] == "unknown"
    assert row["retryable"] is False
    assert row["attempts"] == 0
    assert row["source_partition"] is None and row["first_failure_at"] is None


def test_replay_count_comes_from_the_lineage_header() -> None:
    value = json.dumps({"failed_order": None, "reason": "r"}).encode()
    headers = (("replay.id", b"run-1"), ("replay.count", b"2"))

    assert event_row(_record(value, headers), drained_at=NOW)["replay_count"] == 2
    assert (
        event_row(_record(value, (("replay.count", b"junk"),)), drained_at=NOW)["replay_count"] == 0
    )


def test_parse_envelope_accepts_the_original_systems_shape() -> None:
    envelope, problem = parse_envelope(b'{"failed_order": {"orderId": "1"}, "reason": "x"}')

    assert problem is None
    assert envelope["reason"] == "x"


def test_the_failure_key_names_group_source_and_replay_lineage() -> None:
    from orderproc.dlq.envelope import event_row as row_of
    from orderproc.records import Record

    value = json.dumps(
        {"reason": "r", "failed_order": None, "consumer_group": "order-group",
         "source": {"topic": "orders", "partition": 2, "offset": 40}}
    ).encode()  # fmt: skip
    plain = row_of(Record("orders_dlq", 0, 7, None, value, []), drained_at=NOW)
    replayed = row_of(
        Record("orders_dlq", 1, 9, None, value, [("replay.count", b"2")]), drained_at=NOW
    )
    foreign = row_of(Record("orders_dlq", 0, 8, None, b"junk", []), drained_at=NOW)

    assert plain["failure_key"] == "order-group|src:orders:2:40|r0"
    assert replayed["failure_key"] == "order-group|src:orders:2:40|r2"
    assert foreign["failure_key"] == "dlq:orders_dlq:0:8"
