"""A dead letter always fits: huge values, keys and headers are cut, never the facts."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from orderproc.dlq.envelope import Failure
from orderproc.dlq.letter import MAX_KEY_BYTES, dead_letter, reduced
from orderproc.errors import DeserializationError, ValidationError
from orderproc.models import Order, Source

pytestmark = pytest.mark.unit

LIMIT = 1_000_000 - 512


def failure(raw: bytes, *, key: bytes | None = b"k", order: Order | None = None) -> Failure:
    error = (
        ValidationError("product is too long") if order is None else DeserializationError("x", raw)
    )
    return Failure(error, 1, 1_700_000_000_000, 1_700_000_000_000, Source("orders", 0, 5, None),
                   "order-group", order, raw, key)  # fmt: skip


def test_a_small_dead_letter_keeps_everything() -> None:
    raw = b"\x01\x02garbage"
    record = dead_letter(failure(raw), [("trace", b"t")], now_ms=1, max_bytes=LIMIT)
    envelope = json.loads(record.value)

    assert base64.b64decode(envelope["raw_value_b64"]) == raw
    assert envelope["raw_value_length"] == len(raw)
    assert envelope["raw_value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert "raw_value_truncated" not in envelope
    assert record.key == b"k"
    assert ("trace", b"t") in record.headers


@pytest.mark.parametrize("size", [760_000, 900_000, 5_000_000])
def test_a_huge_value_is_cut_to_fit_with_its_length_and_hash(size: int) -> None:
    raw = bytes(range(256)) * (size // 256)

    record = dead_letter(failure(raw), [], now_ms=1, max_bytes=LIMIT)
    envelope = json.loads(record.value)

    assert record.size <= LIMIT
    assert envelope["raw_value_truncated"] is True
    assert envelope["raw_value_length"] == len(raw)
    assert envelope["raw_value_sha256"] == hashlib.sha256(raw).hexdigest()
    kept = base64.b64decode(envelope["raw_value_b64"])
    assert raw.startswith(kept) and len(kept) > LIMIT // 2


def test_a_huge_key_is_replaced_by_its_hash_and_huge_headers_are_left_behind() -> None:
    key = b"k" * (MAX_KEY_BYTES + 1)
    headers = [(f"h{i}", b"v" * 10_000) for i in range(50)]  # 500 KB of the record's own

    record = dead_letter(failure(b"x", key=key), headers, now_ms=1, max_bytes=LIMIT)
    envelope = json.loads(record.value)

    assert record.key == hashlib.sha256(key).hexdigest().encode()
    assert envelope["key_replaced_by_sha256"] is True
    assert envelope["headers_dropped"] > 0
    assert record.size <= LIMIT
    assert any(k == "orderproc.attempts" for k, _ in record.headers)  # provenance always kept


REDUCED = {"reduced", "raw_value_b64", "raw_value_truncated"}


def test_the_reduced_form_has_no_raw_value_and_no_foreign_headers() -> None:
    full = dead_letter(failure(b"abc" * 1000), [("trace", b"t")], now_ms=1, max_bytes=LIMIT)

    # From what a delivery report carries: the key and the value, not the headers.
    record = reduced(full.key, full.value, "Broker: Message size too large")
    envelope = json.loads(record.value)

    assert envelope["reduced"] == "Broker: Message size too large"
    assert envelope["raw_value_b64"] == ""
    assert envelope["raw_value_truncated"] is True
    assert envelope["raw_value_length"] == 3000
    assert record.headers == [(k, v) for k, v in full.headers if k.startswith("orderproc.")]
    assert record.key == full.key and record.size < full.size
    assert {k: v for k, v in envelope.items() if k not in REDUCED} == {
        k: v for k, v in json.loads(full.value).items() if k not in REDUCED
    }  # everything else as the full dead letter said it


def test_a_huge_error_message_is_cut() -> None:
    f = failure(b"x")
    f.error = ValidationError("y" * 100_000)

    envelope = json.loads(dead_letter(f, [], now_ms=1, max_bytes=LIMIT).value)

    assert len(envelope["reason"]) <= 4000
