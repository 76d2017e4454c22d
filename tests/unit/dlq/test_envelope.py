"""The DLQ envelope and provenance headers: what an operator finds in ``orders_dlq``."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderproc.dlq.envelope import Failure, build_envelope, encode_envelope
from orderproc.dlq.letter import provenance_headers
from orderproc.errors import (
    BusinessRuleError,
    DeserializationError,
    ProcessingError,
    ValidationError,
)
from orderproc.headers import MAX_TEXT, PREFIX, Header, foreign, normalize, text_map
from orderproc.models import Order, Source
from orderproc.serde import SchemalessSerde
from orderproc.worker.retry import classify

pytestmark = pytest.mark.unit

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "dlq_envelope.schema.json"

FIRST_MS = 1_772_352_000_000  # 2026-03-01T08:00:00.000Z
LAST_MS = FIRST_MS + 2_500
NOW_MS = FIRST_MS + 3_123
ORDER = Order("0b1c7f0e-aaaa-4bbb-8ccc-123456789abc", "item3", 145.5)
SOURCE = Source("orders", 2, 41, FIRST_MS - 10)


def _failure(**overrides: Any) -> Failure:
    values: dict[str, Any] = {
        "error": BusinessRuleError("Simulated error: high price"),
        "attempts": 3,
        "first_failure_ms": FIRST_MS,
        "last_failure_ms": LAST_MS,
        "source": SOURCE,
        "consumer_group": "order-group",
        "order": ORDER,
        "raw_value": SchemalessSerde().encode(ORDER),
        "key": ORDER.order_id.encode(),
    }
    values.update(overrides)
    return Failure(**values)


def _ours(headers: list[Header]) -> dict[str, str]:
    """Our provenance headers as text, keyed without the prefix (the last value wins)."""
    return {k.removeprefix(PREFIX): v for k, v in text_map(headers).items() if k.startswith(PREFIX)}


def _undecodable(raw: bytes | None = b"\x01\x02garbage") -> Failure:
    return _failure(
        error=DeserializationError("undecodable Avro", raw),
        attempts=1,
        order=None,
        raw_value=raw,
    )


# -- envelope --------------------------------------------------------------------------


def test_envelope_keeps_the_original_failed_order_and_reason_fields() -> None:
    envelope = build_envelope(_failure(), now_ms=NOW_MS)

    assert envelope["failed_order"] == {
        "orderId": ORDER.order_id,
        "product": "item3",
        "price": 145.5,
    }
    assert envelope["reason"] == "Simulated error: high price"


def test_envelope_describes_the_error_attempts_source_and_group() -> None:
    envelope = build_envelope(_failure(), now_ms=NOW_MS)

    assert envelope["error"] == {
        "class": "BusinessRuleError",
        "message": "Simulated error: high price",
        "category": "business_rule",
        "retryable": True,
    }
    assert envelope["attempts"] == 3
    assert envelope["source"] == {
        "topic": "orders",
        "partition": 2,
        "offset": 41,
        "timestamp": FIRST_MS - 10,
    }
    assert envelope["key"] == ORDER.order_id
    assert envelope["consumer_group"] == "order-group"
    assert envelope["envelope_version"] == 1


def test_wrapped_foreign_exception_is_reported_under_its_own_class_name() -> None:
    failure = _failure(error=classify(TimeoutError("inventory service timed out")))

    envelope = build_envelope(failure, now_ms=NOW_MS)

    assert envelope["error"]["class"] == "TimeoutError"
    assert envelope["error"]["category"] == "transient"
    assert envelope["reason"] == "TimeoutError: inventory service timed out"


def test_error_with_an_empty_message_falls_back_to_its_class_name_as_reason() -> None:
    envelope = build_envelope(_failure(error=ProcessingError("")), now_ms=NOW_MS)

    assert envelope["reason"] == "ProcessingError"


def test_raw_value_is_not_duplicated_when_the_order_decoded() -> None:
    envelope = build_envelope(_failure(), now_ms=NOW_MS)

    assert envelope["raw_value_b64"] is None


def test_undecodable_value_is_kept_byte_for_byte_in_base64() -> None:
    raw = b"\x00\xff\x10not avro"

    envelope = build_envelope(_undecodable(raw), now_ms=NOW_MS)

    assert envelope["failed_order"] is None
    assert base64.b64decode(envelope["raw_value_b64"]) == raw
    assert envelope["error"]["class"] == "DeserializationError"
    assert envelope["error"]["retryable"] is False


def test_null_value_gives_no_raw_value() -> None:
    envelope = build_envelope(_undecodable(None), now_ms=NOW_MS)

    assert envelope["raw_value_b64"] is None


def test_timestamps_are_iso_8601_utc_with_milliseconds() -> None:
    envelope = build_envelope(_failure(), now_ms=NOW_MS)

    assert envelope["first_failure_at"] == "2026-03-01T08:00:00.000+00:00"
    assert envelope["last_failure_at"] == "2026-03-01T08:00:02.500+00:00"
    assert envelope["dead_lettered_at"] == "2026-03-01T08:00:03.123+00:00"
    parsed = datetime.fromisoformat(envelope["dead_lettered_at"])
    assert parsed.tzinfo == UTC
    assert int(parsed.timestamp() * 1000) == NOW_MS


def test_non_utf8_key_is_replaced_not_fatal() -> None:
    envelope = build_envelope(_failure(key=b"\xffkey"), now_ms=NOW_MS)

    assert envelope["key"] == "\ufffdkey"
    json.loads(encode_envelope(envelope))


def test_null_key_stays_null() -> None:
    assert build_envelope(_failure(key=None), now_ms=NOW_MS)["key"] is None


def test_encoded_envelope_is_json_that_decodes_to_the_same_dict() -> None:
    envelope = build_envelope(_failure(), now_ms=NOW_MS)

    encoded = encode_envelope(envelope)

    assert isinstance(encoded, bytes)
    assert json.loads(encoded) == envelope


def test_encode_envelope_refuses_nan_rather_than_write_invalid_json() -> None:
    envelope = build_envelope(_failure(order=Order("o-1", "item1", math.nan)), now_ms=NOW_MS)

    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_envelope(envelope)


def test_nan_priced_record_reaches_the_dlq_without_an_order_so_the_envelope_encodes() -> None:
    # What the consumer does: decode fails validation before an Order exists, so the
    # Failure carries order=None and the raw bytes; no NaN ever reaches the JSON.
    serde = SchemalessSerde()
    raw = serde.encode_record({"orderId": "n-1", "product": "item1", "price": math.nan})
    with pytest.raises(ValidationError, match="not finite") as caught:
        serde.decode(raw)
    failure = _failure(error=caught.value, attempts=1, order=None, raw_value=raw)

    envelope = json.loads(encode_envelope(build_envelope(failure, now_ms=NOW_MS)))

    assert envelope["failed_order"] is None
    assert envelope["error"]["category"] == "validation"
    assert base64.b64decode(envelope["raw_value_b64"]) == raw


@pytest.mark.parametrize(
    "failure",
    [
        _failure(),
        _failure(error=classify(ValueError("boom")), source=SOURCE._replace(timestamp_ms=None)),
        _undecodable(),
        _undecodable(None),
        _failure(key=None),
    ],
    ids=["decoded", "foreign-no-timestamp", "undecodable", "null-value", "null-key"],
)
def test_envelope_matches_the_published_json_schema(failure: Failure) -> None:
    if not SCHEMA_PATH.is_file():
        pytest.skip("schemas/dlq_envelope.schema.json not present yet (the lead adds it)")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)

    envelope = json.loads(encode_envelope(build_envelope(failure, now_ms=NOW_MS)))

    validator.validate(envelope)
    # jsonschema checks "date-time" only when rfc3339-validator is installed: check it here.
    for field in ("first_failure_at", "last_failure_at", "dead_lettered_at"):
        assert datetime.fromisoformat(envelope[field]).tzinfo is not None


# -- provenance headers ----------------------------------------------------------------


def test_provenance_headers_are_all_prefixed_bytes() -> None:
    headers = provenance_headers(_failure())

    assert all(k.startswith(PREFIX) and isinstance(v, bytes) for k, v in headers)
    assert len({k for k, _ in headers}) == len(headers)


def test_provenance_headers_read_back_to_the_failure_facts() -> None:
    meta = _ours(provenance_headers(_failure()))

    assert meta == {
        "error.class": "BusinessRuleError",
        "error.category": "business_rule",
        "error.retryable": "true",
        "attempts": "3",
        "first.failure.ms": str(FIRST_MS),
        "last.failure.ms": str(LAST_MS),
        "source.topic": "orders",
        "source.partition": "2",
        "source.offset": "41",
        "source.timestamp.ms": str(FIRST_MS - 10),
        "consumer.group": "order-group",
        "error.message": "Simulated error: high price",
    }


def test_missing_source_timestamp_is_an_empty_header() -> None:
    failure = _failure(source=SOURCE._replace(timestamp_ms=None))

    assert _ours(provenance_headers(failure))["source.timestamp.ms"] == ""


def test_wrapped_foreign_exception_class_travels_in_the_headers() -> None:
    headers = provenance_headers(_failure(error=classify(ZeroDivisionError("division by zero"))))

    assert _ours(headers)["error.class"] == "ZeroDivisionError"


def test_megabyte_error_message_still_gives_small_headers() -> None:
    failure = _failure(error=ProcessingError("x" * 1_000_000))

    headers = provenance_headers(failure)

    total = sum(len(k.encode()) + len(v) for k, v in headers)
    assert total < 2_048
    message = dict(headers)[PREFIX + "error.message"]
    assert len(message) <= MAX_TEXT
    assert message.endswith(b"...")


def test_clipping_multibyte_text_keeps_valid_utf8() -> None:
    failure = _failure(error=ProcessingError("prix trop élevé € " * 10_000))

    message = dict(provenance_headers(failure))[PREFIX + "error.message"]

    assert len(message) <= MAX_TEXT
    assert message.decode("utf-8").startswith("prix trop élevé € ")


def test_message_that_fits_is_not_clipped() -> None:
    text = "é" * (MAX_TEXT // 2)  # exactly MAX_TEXT bytes

    message = dict(provenance_headers(_failure(error=ProcessingError(text))))

    assert message[PREFIX + "error.message"] == text.encode()


@given(text=st.text(min_size=1, max_size=3_000))
@settings(deadline=None)
def test_any_error_message_header_is_bounded_valid_utf8(text: str) -> None:
    # Surrogates cannot be encoded at all; Python messages never contain them.
    text = text.encode("utf-8", "replace").decode("utf-8")

    message = dict(provenance_headers(_failure(error=ProcessingError(text))))

    value = message[PREFIX + "error.message"]
    assert len(value) <= MAX_TEXT
    value.decode("utf-8")  # strict: raises if a multi-byte character was cut


# -- header helpers --------------------------------------------------------------------


def test_foreign_headers_drop_only_our_prefixed_headers_and_keep_order() -> None:
    headers = [
        ("traceparent", b"00-abc-01"),
        ("orderproc.attempts", b"2"),
        ("replay.id", b"r-1"),
        ("orderproc", b"not ours: no dot"),
        ("orderproc.retry.due.ms", b"123"),
        ("traceparent", b"duplicate kept"),
        ("OrderProc.attempts", b"case differs"),
    ]

    assert foreign(headers) == [
        ("traceparent", b"00-abc-01"),
        ("replay.id", b"r-1"),
        ("orderproc", b"not ours: no dot"),
        ("traceparent", b"duplicate kept"),
        ("OrderProc.attempts", b"case differs"),
    ]


def test_foreign_headers_of_nothing_is_empty() -> None:
    assert foreign(None) == []
    assert foreign([]) == []


def test_retry_hop_replaces_our_headers_instead_of_appending() -> None:
    first_hop = [("trace", b"t"), *provenance_headers(_failure(attempts=1))]

    second_hop = foreign(first_hop) + provenance_headers(_failure(attempts=2))

    assert [k for k, _ in second_hop].count(PREFIX + "attempts") == 1
    assert _ours(second_hop)["attempts"] == "2"
    assert second_hop[0] == ("trace", b"t")


def test_text_map_keeps_full_names_the_last_value_wins_and_bad_bytes_are_replaced() -> None:
    headers = [
        ("orderproc.attempts", b"1"),
        ("trace", b"t"),
        ("orderproc.attempts", b"2"),
        ("orderproc.error.message", b"bad \xff byte"),
    ]

    assert text_map(headers) == {
        "orderproc.attempts": "2",
        "trace": "t",
        "orderproc.error.message": "bad \ufffd byte",
    }


def test_text_map_of_nothing_is_empty() -> None:
    assert text_map(None) == {}


@pytest.mark.parametrize("raw", [None, [], {}])
def test_normalize_headers_of_no_headers_is_empty(raw: Any) -> None:
    assert normalize(raw) == []


def test_normalize_headers_accepts_a_list_with_str_bytes_and_none_values() -> None:
    raw = [("a", b"bytes"), ("b", "text"), ("c", None), ("a", b"again")]

    assert normalize(raw) == [
        ("a", b"bytes"),
        ("b", b"text"),
        ("c", b""),
        ("a", b"again"),
    ]


def test_normalize_headers_accepts_a_dict() -> None:
    raw = {"trace": "t-1", "orderproc.attempts": b"2", "empty": None}

    assert normalize(raw) == [
        ("trace", b"t-1"),
        ("orderproc.attempts", b"2"),
        ("empty", b""),
    ]
