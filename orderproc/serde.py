"""Avro (schemaless, as the original system wrote it) encoding of orders."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from orderproc.errors import DeserializationError, ValidationError
from orderproc.models import Order

_PACKAGE_SCHEMAS = Path(__file__).resolve().parent / "_schemas"
_REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def schema_path(name: str) -> Path:
    """Path of a file under ``schemas/`` (repository checkout or installed wheel)."""
    for folder in (_REPO_SCHEMAS, _PACKAGE_SCHEMAS):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {name} not found in {_REPO_SCHEMAS} or {_PACKAGE_SCHEMAS}")


@cache
def load_schema(name: str = "order.avsc") -> Any:
    """Parse an Avro schema once per process."""
    return fastavro.parse_schema(json.loads(schema_path(name).read_text()))


class OrderSerde:
    """Encodes and decodes orders with the schema parsed once.

    Decoding is strict: bytes left over after the record, truncated input and
    invalid UTF-8 are all ``DeserializationError`` carrying the raw value, so the
    consumer can dead-letter them byte for byte.
    """

    def __init__(self, schema: Any | None = None) -> None:
        self.schema = schema if schema is not None else load_schema()

    def encode(self, order: Order) -> bytes:
        return self.encode_record(order.to_record())

    def encode_record(self, record: dict[str, Any]) -> bytes:
        """Encode a dict with Avro field names; a wrong shape is a ``ValidationError``."""
        price = record.get("price") if isinstance(record, dict) else None
        # fastavro writes a float with float(): "12.5" or True would be encoded silently.
        if isinstance(price, bool) or not isinstance(price, int | float | None):
            raise ValidationError(
                f"not a valid Order record: price must be a number, got {price!r}"
            )
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self.schema, record, strict=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValidationError(f"not a valid Order record: {exc}") from exc
        return buf.getvalue()

    def decode_record(self, raw: bytes | None) -> dict[str, Any]:
        """Decode bytes into a dict, without domain validation."""
        if not raw:
            raise DeserializationError("empty value", raw)
        buf = io.BytesIO(raw)
        try:
            record = fastavro.schemaless_reader(buf, self.schema, None)
        except (EOFError, UnicodeDecodeError, ValueError, TypeError, IndexError) as exc:
            detail = str(exc).split(" from <")[0] or "input ended early"
            raise DeserializationError(
                f"undecodable Avro ({type(exc).__name__}: {detail})", raw
            ) from exc
        if buf.tell() != len(raw):
            raise DeserializationError(
                f"{len(raw) - buf.tell()} trailing bytes after the Avro record", raw
            )
        if not isinstance(record, dict):
            raise DeserializationError("Avro value is not a record", raw)
        return record

    def decode(self, raw: bytes | None) -> Order:
        """Decode and validate one order.

        Raises:
            DeserializationError: the bytes are not an Avro ``Order``.
            ValidationError: the record decoded but is not a valid order.
        """
        if raw:  # the hot path, inlined: one Python call per record instead of three
            buf = io.BytesIO(raw)
            try:
                record = fastavro.schemaless_reader(buf, self.schema, None)
            except (EOFError, UnicodeDecodeError, ValueError, TypeError, IndexError):
                record = None
            if record is not None and buf.tell() == len(raw):
                return Order.from_record(record)
        return Order.from_record(self.decode_record(raw))  # raises the precise error
