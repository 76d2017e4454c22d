"""OrderSerde: the Avro bytes on the wire, decoded strictly so bad records reach the DLQ intact."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderproc.errors import DeserializationError, ValidationError
from orderproc.models import Order
from orderproc.serde import SchemalessSerde

pytestmark = pytest.mark.unit

SERDE = SchemalessSerde()
ORDER = Order("0b1c7f0e-aaaa-4bbb-8ccc-123456789abc", "item3", 45.67)

# Avro `float` is 32-bit: cents survive the round trip only while the float32 spacing
# is below one cent, i.e. for prices under 2**17 (131 072).
MAX_EXACT_CENTS = 2**17 * 100 - 1


def _avro_string(text: bytes) -> bytes:
    return bytes([len(text) * 2]) + text  # zig-zag length, valid for len < 64


def float32(value: float) -> float:
    """``value`` as Avro ``float`` (32-bit) carries it."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def test_order_round_trips() -> None:
    assert SERDE.decode(SERDE.encode(ORDER)) == ORDER._replace(price=float32(ORDER.price))


def test_encoding_is_the_original_schemaless_avro_layout() -> None:
    raw = SERDE.encode(Order("o-1", "item1", 1.0))

    assert raw == _avro_string(b"o-1") + _avro_string(b"item1") + struct.pack("<f", 1.0)


def test_float32_price_comes_back_exactly_as_written_and_renders_as_the_same_cents() -> None:
    raw = SERDE.encode(ORDER)

    price = SERDE.decode(raw).price
    assert price == 45.66999816894531  # what the wire holds, kept exactly
    assert f"{price:.2f}" == "45.67"


def test_prices_from_2_pow_17_can_lose_cents_in_avro_float32() -> None:
    # A property of the original schema ("price": "float"), not of the code: documented
    # so a schema change to "double" shows up here.
    def shown(price: float) -> str:
        return f"{SERDE.decode(SERDE.encode(Order('o', 'p', price))).price:.2f}"

    assert shown(131_071.99) == "131071.99"
    assert shown(131_072.01) != "131072.01"
    assert shown(999_999.99) == "1000000.00"


# -- strict decoding -------------------------------------------------------------------


def test_truncated_value_is_a_deserialization_error_with_the_raw_bytes() -> None:
    raw = SERDE.encode(ORDER)[:-1]

    with pytest.raises(DeserializationError) as caught:
        SERDE.decode(raw)

    assert caught.value.raw == raw


def test_trailing_bytes_are_a_deserialization_error_with_the_raw_bytes() -> None:
    raw = SERDE.encode(ORDER) + b"\x00\x01"

    with pytest.raises(DeserializationError, match="2 trailing bytes") as caught:
        SERDE.decode(raw)

    assert caught.value.raw == raw


@pytest.mark.parametrize("raw", [b"", None], ids=["empty", "null"])
def test_empty_or_null_value_is_a_deserialization_error(raw: bytes | None) -> None:
    with pytest.raises(DeserializationError, match="empty value") as caught:
        SERDE.decode(raw)

    assert caught.value.raw == raw


def test_invalid_utf8_string_is_a_deserialization_error() -> None:
    raw = _avro_string(b"\xff\xfe") + _avro_string(b"item1") + struct.pack("<f", 1.0)

    with pytest.raises(DeserializationError, match="UnicodeDecodeError") as caught:
        SERDE.decode(raw)

    assert caught.value.raw == raw


def test_deserialization_error_message_is_one_line() -> None:
    with pytest.raises(DeserializationError) as caught:
        SERDE.decode(b"\x01")

    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("undecodable Avro")


def test_decoded_but_invalid_order_is_a_validation_error_not_a_decoding_error() -> None:
    raw = SERDE.encode_record({"orderId": "o-1", "product": "item1", "price": -3.0})

    with pytest.raises(ValidationError, match="negative"):
        SERDE.decode(raw)


def test_decode_record_does_not_apply_domain_validation() -> None:
    raw = SERDE.encode_record({"orderId": "", "product": "item1", "price": math.inf})

    assert SERDE.decode_record(raw) == {"orderId": "", "product": "item1", "price": math.inf}


# -- encode_record ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        {"orderId": 1, "product": "item1", "price": 1.0},
        {"orderId": "o-1", "product": None, "price": 1.0},
        {"orderId": "o-1", "product": "item1"},
        {"orderId": "o-1", "product": "item1", "price": None},
        {"orderId": "o-1", "product": "item1", "price": 1.0, "coupon": "X"},
        {"orderId": "\ud800", "product": "item1", "price": 1.0},
        None,
    ],
    ids=[
        "int-id",
        "null-product",
        "missing-price",
        "null-price",
        "extra-field",
        "unencodable-str",
        "not-a-record",
    ],
)
def test_wrong_record_shape_is_a_validation_error(record: Any) -> None:
    with pytest.raises(ValidationError, match="not a valid Order record") as caught:
        SERDE.encode_record(record)

    assert caught.value.__cause__ is not None
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("price", ["12.5", True, "nan"], ids=["str", "bool", "str-nan"])
def test_non_number_price_is_a_validation_error(price: Any) -> None:
    with pytest.raises(ValidationError):
        SERDE.encode_record({"orderId": "o-1", "product": "item1", "price": price})


def test_encode_record_still_writes_nan_so_tests_can_craft_invalid_orders() -> None:
    raw = SERDE.encode_record({"orderId": "n-1", "product": "item1", "price": math.nan})

    assert math.isnan(SERDE.decode_record(raw)["price"])


# -- properties ------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=60
).filter(lambda s: s.strip() != "")  # valid orders: the store cannot hold NUL


@given(
    order_id=_TEXT,
    product=_TEXT,
    cents=st.integers(0, MAX_EXACT_CENTS),
)
@settings(deadline=None)
def test_any_valid_order_round_trips(order_id: str, product: str, cents: int) -> None:
    order = Order(order_id, product, cents / 100)

    decoded = SERDE.decode(SERDE.encode(order))
    assert decoded == order._replace(price=float32(order.price))
    assert f"{decoded.price:.2f}" == f"{order.price:.2f}"


@given(raw=st.binary(max_size=200))
@settings(deadline=None, max_examples=500)
def test_arbitrary_bytes_only_ever_raise_our_errors(raw: bytes) -> None:
    try:
        order = SERDE.decode(raw)
    except DeserializationError as exc:
        assert exc.raw == raw
    except ValidationError:
        pass
    else:
        assert isinstance(order, Order)
