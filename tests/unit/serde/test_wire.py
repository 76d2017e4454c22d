"""The registry wire format without a registry: a fake client shows what is fetched, cached,
dead-lettered and what is an outage (the real registry: tests/integration/registry)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from orderproc.errors import (
    DeserializationError,
    ErrorCategory,
    RegistryError,
    RegistryUnavailableError,
)
from orderproc.models import Order
from orderproc.serde import OrderSchema, RegistrySerde, SchemalessSerde, local_schema
from orderproc.serde.registry import Registered, redact
from orderproc.serde.wire import NEGATIVE_TTL_S

pytestmark = pytest.mark.unit


def with_field(**field: Any) -> str:
    base = json.loads(local_schema().text)
    base["fields"].append(field)
    return json.dumps(base)


V2 = with_field(name="currency", type="string", default="EUR")
PAYMENT = json.dumps(
    {"type": "record", "name": "Payment", "fields": [{"name": "a", "type": "int"}]}
)


class FakeRegistry:
    """Schemas by id, counting what is asked; ``down`` makes every call an outage."""

    url = "http://registry.invalid"

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []
        self.down = False

    def schema(self, schema_id: int) -> tuple[str, str]:
        self.asked.append(schema_id)
        if self.down:
            raise RegistryUnavailableError("cannot reach the schema registry: Connection refused")
        if schema_id not in self.schemas:
            raise RegistryError("no such schema", status=404, error_code=40403)
        return self.schemas[schema_id], "AVRO"

    def where_is(self, schema_id: int) -> list[tuple[str, int]]:
        return [("orders-value", schema_id)]

    def lookup(self, subject: str, text: str) -> Registered:
        return Registered(subject, 1, 1, text)


def serde(registry: FakeRegistry, **kwargs: Any) -> RegistrySerde:
    return RegistrySerde(registry, topic="orders", **kwargs)  # type: ignore[arg-type]


def wire(schema_id: int, record: dict[str, Any], text: str | None = None) -> bytes:
    body = SchemalessSerde(OrderSchema.of(text or local_schema().text)).serialize(record)
    return struct.pack(">bI", 0, schema_id) + body


ORDER = {"orderId": "o-1", "product": "item1", "price": 12.5}


def test_the_writer_schema_is_fetched_once_per_id_and_newer_writers_are_read_into_ours() -> None:
    registry = FakeRegistry({1: local_schema().text, 2: V2})
    codec = serde(registry)

    orders = [codec.decode(wire(1, ORDER)) for _ in range(3)]
    newer = [codec.decode(wire(2, {**ORDER, "currency": "USD"}, V2)) for _ in range(3)]

    assert orders == newer == [Order("o-1", "item1", 12.5)] * 3
    assert registry.asked == [1, 2]
    assert codec.label(2) == "orders-value v2"


def test_the_cache_is_bounded_the_oldest_id_goes_first() -> None:
    registry = FakeRegistry({i: local_schema().text for i in (1, 2, 3)})
    codec = serde(registry, cache_size=2)

    for schema_id in (1, 2, 3, 3, 1):
        codec.decode(wire(schema_id, ORDER))

    assert registry.asked == [1, 2, 3, 1]


def test_an_unknown_id_is_the_records_failure_and_is_asked_again_only_after_a_while() -> None:
    now = [0.0]
    registry = FakeRegistry({})
    codec = serde(registry, clock=lambda: now[0])
    raw = wire(7, ORDER)

    for _ in range(3):
        with pytest.raises(DeserializationError) as caught:
            codec.decode(raw)
    now[0] += NEGATIVE_TTL_S + 1
    with pytest.raises(DeserializationError):
        codec.decode(raw)

    assert (caught.value.schema_id, caught.value.category) == (7, ErrorCategory.SCHEMA)
    assert str(caught.value).startswith("unknown schema id 7: the schema registry at")
    assert registry.asked == [7, 7]


def test_a_writer_that_is_not_an_order_is_a_schema_failure_saying_why() -> None:
    codec = serde(FakeRegistry({5: PAYMENT}))

    with pytest.raises(DeserializationError) as caught:
        codec.decode(struct.pack(">bI", 0, 5) + b"\x02")

    assert caught.value.category is ErrorCategory.SCHEMA
    assert str(caught.value) == (
        "writer schema id 5 (Payment) cannot be read as com.assignment.Order: "
        "record Payment is not com.assignment.Order (and no alias says so)"
    )


@pytest.mark.parametrize(
    ("raw", "starts"),
    [
        (b"", "empty value"),
        (b"\x01abcdef", "no magic byte: the value starts with 0x01"),
        (b"\x00\x00\x01", "a 3-byte value is too short"),
    ],
)
def test_values_without_the_wire_format_are_deserialization_failures(
    raw: bytes, starts: str
) -> None:
    registry = FakeRegistry({})

    with pytest.raises(DeserializationError) as caught:
        serde(registry).decode(raw)

    assert str(caught.value).startswith(starts)
    assert caught.value.schema_id is None and registry.asked == []


def test_an_unreachable_registry_is_an_outage_and_nothing_is_cached() -> None:
    registry = FakeRegistry({1: local_schema().text})
    codec = serde(registry)
    registry.down = True

    with pytest.raises(RegistryUnavailableError):
        codec.decode(wire(1, ORDER))
    registry.down = False

    assert codec.decode(wire(1, ORDER)).order_id == "o-1"
    assert registry.asked == [1, 1]


def test_the_producer_writes_magic_byte_id_and_body_with_the_subject_of_the_topic() -> None:
    codec = serde(FakeRegistry({}))

    raw = codec.serialize(Order("o-1", "item1", 12.5))

    assert raw[:5] == b"\x00\x00\x00\x00\x01"
    assert raw[5:] == SchemalessSerde().encode(Order("o-1", "item1", 12.5))
    assert codec.subject() == "orders-value" and codec.writer_schema().schema_id == 1


def test_a_password_in_the_registry_url_is_masked() -> None:
    assert (
        redact("https://bob:s3cret@reg.example:8081/api") == "https://bob:***@reg.example:8081/api"
    )
    assert redact("http://reg.example/api") == "http://reg.example/api"
