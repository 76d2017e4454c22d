"""Order validation and the running average the consumer prints."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderproc.errors import ValidationError
from orderproc.models import Order, RunningAverage, Source

pytestmark = pytest.mark.unit

VALID: dict[str, Any] = {"orderId": "o-1", "product": "item1", "price": 45.67}


def _record(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


# -- Order.from_record -----------------------------------------------------------------


def test_valid_record_becomes_an_order() -> None:
    assert Order.from_record(VALID) == Order("o-1", "item1", 45.67)


def test_float32_noise_is_kept_exactly_and_only_rendering_rounds() -> None:
    price = Order.from_record(_record(price=45.66999816894531)).price

    assert price == 45.66999816894531
    assert f"{price:.2f}" == "45.67"


def test_integer_price_is_accepted_as_a_float() -> None:
    order = Order.from_record(_record(price=100))

    assert order.price == 100.0
    assert isinstance(order.price, float)


def test_free_order_is_valid() -> None:
    assert Order.from_record(_record(price=0.0)).price == 0.0


@pytest.mark.parametrize("field", ["orderId", "product", "price"])
def test_missing_field_is_named_in_the_error(field: str) -> None:
    record = {k: v for k, v in VALID.items() if k != field}

    with pytest.raises(ValidationError, match=f"missing field '{field}'"):
        Order.from_record(record)


def test_record_that_is_not_a_mapping_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="missing field"):
        Order.from_record(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("order_id", ["", "   ", None, 7])
def test_empty_or_non_text_order_id_is_rejected(order_id: Any) -> None:
    with pytest.raises(ValidationError, match="orderId is empty"):
        Order.from_record(_record(orderId=order_id))


@pytest.mark.parametrize("product", ["", "\t", None])
def test_empty_product_is_rejected(product: Any) -> None:
    with pytest.raises(ValidationError, match="product is empty"):
        Order.from_record(_record(product=product))


@pytest.mark.parametrize("price", [True, False, "12.50", None, b"1"])
def test_non_number_price_is_rejected(price: Any) -> None:
    with pytest.raises(ValidationError, match="price is not a number"):
        Order.from_record(_record(price=price))


@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf])
def test_non_finite_price_is_rejected(price: float) -> None:
    with pytest.raises(ValidationError, match="price is not finite"):
        Order.from_record(_record(price=price))


@pytest.mark.parametrize("price", [-0.01, -1, -1e9])
def test_negative_price_is_rejected(price: float) -> None:
    with pytest.raises(ValidationError, match="price is negative"):
        Order.from_record(_record(price=price))


def test_to_record_uses_the_original_json_field_names() -> None:
    order = Order("o-1", "item1", 45.67)

    assert order.to_record() == {"orderId": "o-1", "product": "item1", "price": 45.67}
    assert Order.from_record(order.to_record()) == order


@given(
    record=st.dictionaries(
        st.sampled_from(["orderId", "product", "price", "other"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(max_size=5),
            st.binary(max_size=5),
        ),
    )
)
@settings(deadline=None)
def test_any_record_gives_a_valid_order_or_a_validation_error(record: dict[str, Any]) -> None:
    try:
        order = Order.from_record(record)
    except ValidationError:
        return
    assert order.order_id.strip() and order.product.strip()
    assert math.isfinite(order.price) and order.price >= 0
    assert order.price == record["price"]  # kept exactly as given, never rounded
    assert type(order.price) is float


def test_source_to_dict_names_the_kafka_coordinates() -> None:
    assert Source("orders", 1, 99, 1_700_000_000_000).to_dict() == {
        "topic": "orders",
        "partition": 1,
        "offset": 99,
        "timestamp": 1_700_000_000_000,
    }


# -- RunningAverage --------------------------------------------------------------------


def test_empty_average_is_zero() -> None:
    average = RunningAverage()

    assert (average.count, average.overall, average.per_product()) == (0, 0.0, {})


def test_average_overall_and_per_product() -> None:
    average = RunningAverage()
    for product, price in [("item2", 10.0), ("item1", 20.0), ("item2", 30.0), ("item1", 40.0)]:
        average.add(product, price)

    assert average.count == 4
    assert average.overall == 25.0
    assert average.per_product() == {"item1": 30.0, "item2": 20.0}
    assert list(average.per_product()) == ["item1", "item2"]


def test_average_resumes_from_stored_totals() -> None:
    # After a restart the consumer seeds the average from the database totals.
    average = RunningAverage({"item1": (2, 30.0), "item3": (1, 90.0)})

    average.add("item1", 60.0)

    assert average.count == 4
    assert average.overall == pytest.approx(45.0)
    assert average.per_product() == {"item1": 30.0, "item3": 90.0}


def test_product_with_zero_stored_count_is_left_out_of_per_product() -> None:
    average = RunningAverage({"item1": (0, 0.0), "item2": (2, 50.0)})

    assert average.per_product() == {"item2": 25.0}
    assert average.overall == 25.0


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("orderId", "o" * 201, "orderId is 201 characters long; the store holds 200"),
        ("product", "p" * 201, "product is 201 characters long"),
        ("product", "a\x00b", "product contains a NUL character"),
        ("orderId", "\x00", "orderId contains a NUL character"),
        ("price", 1e39, "larger than an Avro float can hold"),
    ],
)
def test_what_the_store_or_avro_cannot_hold_is_invalid(field: str, value: object, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Order.from_record(_record(**{field: value}))


def test_the_longest_storable_order_is_valid() -> None:
    order = Order.from_record({"orderId": "o" * 200, "product": "注" * 200, "price": 3.4e38})

    assert len(order.order_id) == len(order.product) == 200
