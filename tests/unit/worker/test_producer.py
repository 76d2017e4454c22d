"""OrderGenerator: random orders shaped like the original system's, and what the producer
counts (no broker involved)."""

from __future__ import annotations

import random
import re
import uuid
from itertools import islice
from typing import Any

import pytest
from confluent_kafka import KafkaError

from orderproc.config import Settings
from orderproc.metrics import ProducerMetrics
from orderproc.models import Order
from orderproc.worker.producer import (
    PRICE_MAX,
    PRICE_MIN,
    PRODUCTS,
    OrderGenerator,
    OrderProducer,
)

pytestmark = pytest.mark.unit

SAMPLES = 20_000


def _orders(generator: OrderGenerator, n: int = SAMPLES) -> list[Order]:
    return list(islice(generator, n))


@pytest.fixture(scope="module")
def original() -> list[Order]:
    return _orders(OrderGenerator(rng=random.Random(20_240_301)))


def test_about_36_percent_of_original_orders_fail_the_default_threshold(
    original: list[Order],
) -> None:
    share = sum(o.price > 100.0 for o in original) / len(original)

    assert share == pytest.approx(50 / 140, abs=0.015)  # uniform 10-150: 35.7 %


def test_products_are_the_original_item1_to_item5_all_used(original: list[Order]) -> None:
    used = {o.product for o in original}

    assert used == set(PRODUCTS)
    assert used == {"item1", "item2", "item3", "item4", "item5"}  # the original system's


def test_ids_are_unique_uuid4_strings(original: list[Order]) -> None:
    ids = [o.order_id for o in original]

    assert len(set(ids)) == len(ids)
    for order_id in ids[:500]:
        parsed = uuid.UUID(order_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == order_id


def test_prices_have_two_decimals_and_span_10_to_150(original: list[Order]) -> None:
    prices = [o.price for o in original]

    assert all(PRICE_MIN <= p <= PRICE_MAX for p in prices)
    # The original's uniform 10-150: both ends of the range are reached.
    assert 10.0 <= min(prices) < 11.0 and 149.0 < max(prices) <= 150.0
    assert all(re.fullmatch(r"\d+\.\d{1,2}", repr(p)) for p in prices)


def test_generated_orders_pass_the_domain_validation(original: list[Order]) -> None:
    for order in original[:1_000]:
        assert Order.from_record(order.to_record()) == order


def test_same_seed_gives_the_same_products_and_prices_but_new_ids() -> None:
    first = _orders(OrderGenerator(rng=random.Random(5)), 50)
    second = _orders(OrderGenerator(rng=random.Random(5)), 50)

    assert [(o.product, o.price) for o in first] == [(o.product, o.price) for o in second]
    # A second seeded run must not collide with the first in the store (ids are the key).
    assert not {o.order_id for o in first} & {o.order_id for o in second}


@pytest.mark.parametrize("fail_share", [0.05, 0.5, 0.9])
def test_fail_share_is_honoured(fail_share: float) -> None:
    orders = _orders(OrderGenerator(fail_share=fail_share, rng=random.Random(11)))

    share = sum(o.price > 100.0 for o in orders) / len(orders)

    assert share == pytest.approx(fail_share, abs=0.015)


@pytest.mark.parametrize(("fail_share", "expected"), [(0.0, 0.0), (1.0, 1.0)])
def test_extreme_fail_shares_are_exact(fail_share: float, expected: float) -> None:
    orders = _orders(OrderGenerator(fail_share=fail_share, rng=random.Random(3)), 2_000)

    assert sum(o.price > 100.0 for o in orders) / len(orders) == expected


def test_fail_share_follows_a_custom_threshold() -> None:
    generator = OrderGenerator(threshold=40.0, fail_share=0.25, rng=random.Random(8))

    orders = _orders(generator, 10_000)

    assert sum(o.price > 40.0 for o in orders) / len(orders) == pytest.approx(0.25, abs=0.02)
    assert all(o.price >= 10.0 for o in orders)


def test_failing_prices_stay_two_decimal_and_above_the_threshold() -> None:
    orders = _orders(OrderGenerator(fail_share=1.0, rng=random.Random(13)), 5_000)

    assert all(100.01 <= o.price <= 150.0 for o in orders)
    assert all(o.price == round(o.price, 2) for o in orders)


@pytest.mark.parametrize("fail_share", [-0.01, 1.01, float("nan")])
def test_fail_share_outside_zero_to_one_is_rejected(fail_share: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        OrderGenerator(fail_share=fail_share)


# -- what the producer counts ----------------------------------------------------------


class _RefusingProducer:
    """A producer whose every delivery fails (the broker refused or timed out)."""

    def __init__(self) -> None:
        self.reports: list[Any] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.reports.append((topic, kwargs["on_delivery"], kwargs.get("key")))

    def poll(self, _timeout: float = 0) -> int:
        for topic, report, key in self.reports:
            report(KafkaError(KafkaError._MSG_TIMED_OUT), _Msg(topic, key))
        self.reports.clear()
        return 0

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


class _Msg:
    def __init__(self, topic: str, key: bytes | None) -> None:
        self._topic, self._key = topic, key

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key


def test_failed_deliveries_are_counted_in_the_metrics() -> None:
    metrics = ProducerMetrics()
    producer = OrderProducer(
        Settings(),
        producer=_RefusingProducer(),
        echo=None,
        metrics=metrics,  # type: ignore[arg-type]
    )

    stats = producer.run(OrderGenerator(rng=random.Random(1)), count=3, rate=0)

    assert stats.failed == 3
    assert metrics.registry.get_sample_value("orderproc_orders_produced_total") == 3
    assert metrics.registry.get_sample_value("orderproc_order_delivery_failures_total") == 3
    assert metrics.registry.get_sample_value("orderproc_orders_delivered_total") == 0
