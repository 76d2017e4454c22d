"""Schemaless Avro, as the original system wrote orders: the body alone, the schema known."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import fastavro

from orderproc.config import WireFormat
from orderproc.errors import DeserializationError
from orderproc.models import Order
from orderproc.serde.base import OrderSerde, SerializationContext, avro_body
from orderproc.serde.schemas import OrderSchema, local_schema

READ_ERRORS = (EOFError, UnicodeDecodeError, ValueError, TypeError, IndexError)
"""What fastavro raises on bytes that do not match the schema."""


class SchemalessSerde(OrderSerde):
    """Encodes and decodes orders with one schema (default: the local ``order.avsc``).

    Decoding is strict: bytes left over after the record, truncated input and invalid
    UTF-8 are all ``DeserializationError`` carrying the raw value, so the consumer can
    dead-letter them byte for byte.
    """

    wire_format = WireFormat.SCHEMALESS

    def __init__(self, schema: OrderSchema | None = None) -> None:
        self.order_schema = schema or local_schema()
        self.schema = self.order_schema.parsed

    def writer_schema(self, ctx: SerializationContext | None = None) -> OrderSchema:
        return self.order_schema

    def serialize(
        self, obj: Order | Mapping[str, Any], ctx: SerializationContext | None = None
    ) -> bytes:
        return avro_body(self.order_schema, obj)

    def deserialize(
        self, data: bytes | None, ctx: SerializationContext | None = None
    ) -> dict[str, Any]:
        return read_body(data, 0, self.schema, None, None)

    def decode(self, data: bytes | None) -> Order:
        return Order.from_record(read_body(data, 0, self.schema, None, None))


def read_body(
    raw: bytes | None, start: int, writer: Any, reader: Any, schema_id: int | None
) -> dict[str, Any]:
    """The Avro record in ``raw`` from ``start`` on, all of it used; else the precise error."""
    if not raw:
        raise DeserializationError("empty value", raw, schema_id=schema_id)
    buf = io.BytesIO(raw)
    if start:
        buf.seek(start)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except READ_ERRORS as exc:
        detail = str(exc).split(" from <")[0] or "input ended early"
        where = "" if schema_id is None else f" for schema id {schema_id}"
        raise DeserializationError(
            f"undecodable Avro{where} ({type(exc).__name__}: {detail})", raw, schema_id=schema_id
        ) from exc
    if buf.tell() != len(raw):
        raise DeserializationError(
            f"{len(raw) - buf.tell()} trailing bytes after the Avro record", raw,
            schema_id=schema_id,
        )  # fmt: skip
    if type(record) is not dict:
        raise DeserializationError("Avro value is not a record", raw, schema_id=schema_id)
    return record
