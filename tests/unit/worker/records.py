"""Consumed records for the worker's unit tests: what ``consume``/``poll`` hand over."""

from __future__ import annotations

from orderproc.headers import Header
from orderproc.models import Order
from orderproc.serde import SchemalessSerde

SERDE = SchemalessSerde()
BROKEN = b"\xff\xff\xff"  # not an order: dead-lettered on its first read


def order(order_id: str, price: float = 10.0) -> bytes:
    """An order's value; priced above 100 it fails (``PriceThresholdHandler``) and is retried."""
    return SERDE.encode(Order(order_id, "item1", price))


class Consumed:
    """A message as ``Consumer.consume`` hands it over (no error), with its headers."""

    def __init__(
        self, topic: str, partition: int, offset: int, value: bytes,
        headers: list[Header] | None = None,
    ) -> None:  # fmt: skip
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._headers = value, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return f"k-{self._topic}-{self._partition}-{self._offset}".encode()

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[Header] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)  # TIMESTAMP_CREATE_TIME


class Acquired(Consumed):
    """A record a share consumer acquired, on its ``delivery``-th delivery."""

    def __init__(
        self, offset: int, value: bytes, delivery: int = 1, headers: list[Header] | None = None
    ) -> None:
        super().__init__("orders", 0, offset, value, headers)
        self._delivery = delivery

    def delivery_count(self) -> int:
        return self._delivery
