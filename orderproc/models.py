"""Domain objects: an order and where a Kafka record came from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orderproc.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Order:
    """One order, as carried by the Avro ``com.assignment.Order`` record."""

    order_id: str
    product: str
    price: float

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Order:
        """Build and validate an order from its Avro field names.

        Raises:
            ValidationError: a field is missing, empty or out of range.
        """
        try:
            order_id, product, price = record["orderId"], record["product"], record["price"]
        except (KeyError, TypeError) as exc:
            raise ValidationError(f"missing field {exc}") from exc
        if not isinstance(order_id, str) or not order_id.strip():
            raise ValidationError("orderId is empty")
        if not isinstance(product, str) or not product.strip():
            raise ValidationError("product is empty")
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValidationError(f"price is not a number: {price!r}")
        if not math.isfinite(price):
            raise ValidationError(f"price is not finite: {price}")
        if price < 0:
            raise ValidationError(f"price is negative: {price}")
        # Avro `float` is 32-bit: 45.67 arrives as 45.66999816894531. Prices are cents.
        return cls(order_id=order_id, product=product, price=round(float(price), 2))

    def to_record(self) -> dict[str, Any]:
        """The order with its Avro field names (the original system's JSON shape)."""
        return {"orderId": self.order_id, "product": self.product, "price": self.price}


@dataclass(frozen=True, slots=True)
class Source:
    """Coordinates of the record an order was first read from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
        }


class RunningAverage:
    """Average processed price, overall and per product, as the original consumer printed it."""

    def __init__(self, totals: dict[str, tuple[int, float]] | None = None) -> None:
        self._per_product: dict[str, list[float]] = {
            product: [float(n), total] for product, (n, total) in (totals or {}).items()
        }

    def add(self, product: str, price: float) -> None:
        entry = self._per_product.setdefault(product, [0.0, 0.0])
        entry[0] += 1
        entry[1] += price

    @property
    def count(self) -> int:
        return int(sum(n for n, _ in self._per_product.values()))

    @property
    def overall(self) -> float:
        n = sum(n for n, _ in self._per_product.values())
        return sum(t for _, t in self._per_product.values()) / n if n else 0.0

    def per_product(self) -> dict[str, float]:
        return {p: t / n for p, (n, t) in sorted(self._per_product.items()) if n}
