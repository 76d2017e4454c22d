"""Hostile records on the registry wire format, written by a client we did not write (kcat):
each becomes a dead letter that names its schema id and why, the orders around them are
processed, and the drain and the report carry the id (a bad deploy is one line)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Message

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.models import Order
from orderproc.report.aggregate import build_report
from orderproc.serde import OrderSchema, local_schema
from orderproc.serde.registry import RegistryClient
from orderproc.serde.subjects import register
from orderproc.store.engine import open_engine
from orderproc.worker.producer import OrderProducer
from tests.registry_support import Run, Subject

pytestmark = pytest.mark.integration

PAYMENT = json.dumps({"type": "record", "name": "Payment", "namespace": "com.other",
                      "fields": [{"name": "amount", "type": "double"}]})  # fmt: skip
UNKNOWN_ID = 2_000_000_001


def wire(schema_id: int, body: bytes = b"") -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def test_each_hostile_wire_record_is_a_dead_letter_with_its_schema_id_and_the_orders_go_on(
    registry_settings: Callable[..., Settings],
    versions: Callable[..., Subject],
    registry: RegistryClient,
    kcat: Callable[..., None],
    consume: Callable[..., Run],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = registry_settings()
    v1 = versions(settings, v1=local_schema().text)
    v1_id = v1.ids["v1"]
    payment = register(registry, f"payments-{settings.orders_topic}-value", OrderSchema.of(PAYMENT))
    producer = OrderProducer(settings, echo=None)
    producer.send(Order("before", "item1", 10.0))
    producer.producer.flush(30)
    hostile = {
        "no magic byte": b"\x01not the wire format",
        "unknown id": wire(UNKNOWN_ID, b"\x02a\x02b\x00\x00\x80?"),
        "garbage after a known id": wire(v1_id, b"\xff\xff\xff\xff"),
        "not an order": wire(payment.schema_id, struct.pack("<d", 12.5)),
        "five bytes": wire(v1_id),
    }
    for value in hostile.values():
        kcat(settings, value)
    producer.send(Order("after", "item2", 20.0))
    assert producer.producer.flush(30) == 0

    run = consume(settings)

    assert set(run.processed) == {"before", "after"}
    letters = {m.value() and json.loads(m.value())["raw_value_b64"]: json.loads(m.value())
               for m in read_all(settings.dlq_topic)}  # fmt: skip
    assert len(letters) == len(hostile) == run.stats.dead_lettered
    by_case = {case: _letter_of(letters, value) for case, value in hostile.items()}
    assert {case: (e.get("schema_id"), e["error"]["category"]) for case, e in by_case.items()} == {
        "no magic byte": (None, "deserialization"),
        "unknown id": (UNKNOWN_ID, "schema"),
        "garbage after a known id": (v1_id, "deserialization"),
        "not an order": (payment.schema_id, "schema"),
        "five bytes": (v1_id, "deserialization"),
    }
    reasons = {case: e["reason"] for case, e in by_case.items()}
    assert reasons["no magic byte"].startswith("no magic byte: the value starts with 0x01")
    assert reasons["unknown id"].startswith(f"unknown schema id {UNKNOWN_ID}: the schema registry")
    assert reasons["not an order"].startswith(
        f"writer schema id {payment.schema_id} (com.other.Payment) cannot be read as "
        "com.assignment.Order: record com.other.Payment is not com.assignment.Order"
    )
    assert reasons["five bytes"] == (
        f"undecodable Avro for schema id {v1_id} (EOFError: input ended early)"
    )

    run_drain(settings)  # into the consumer's store (migrated)
    with open_engine(settings.effective_database_url) as engine:
        report = build_report(engine)
    ours = f"{settings.orders_topic}-value v1"
    assert dict(report.inflow_by_schema) == {
        f"id {v1_id} ({ours})": 2,
        f"id {UNKNOWN_ID}": 1,
        f"id {payment.schema_id}" + _where(registry, payment.schema_id): 1,
        "(none)": 1,
    }


def _letter_of(letters: dict[str, Any], value: bytes) -> dict[str, Any]:
    return letters[base64.b64encode(value).decode()]


def _where(registry: RegistryClient, schema_id: int) -> str:
    subject, version = registry.where_is(schema_id)[0]
    return f" ({subject} v{version})"
