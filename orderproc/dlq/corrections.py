"""Corrections a reviewer makes to a dead-lettered order, validated before they are saved.

A correction must be a valid Avro ``Order`` of the schema it will be written with (the
local ``order.avsc``, or with the registry the subject's latest version, whose added
fields are editable too: ``orderproc.serde.serde_for(settings, latest=True)``) and
pass the order's own validation; the original stays beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from orderproc.errors import ReviewError, ValidationError
from orderproc.models import Order
from orderproc.serde import OrderSchema, SchemalessSerde, local_schema
from orderproc.store.tables import DlqEvent

NUMBERS = {"float": float, "double": float, "int": int, "long": int}


def payload_of(event: DlqEvent) -> dict[str, Any] | None:
    """The order a replay would publish: the correction if any, else the failed order."""
    if event.corrected_payload:
        return dict(event.corrected_payload)
    if event.order_id is None or event.product is None or event.price is None:
        return None
    return {"orderId": event.order_id, "product": event.product, "price": event.price}


def validated_order(
    record: Mapping[str, Any], *, context: str = "order", schema: OrderSchema | None = None
) -> dict[str, Any]:
    """The record as a valid order of ``schema`` (default: the local one); ``ReviewError``
    if it is not one. Fields the schema adds to the order's own are kept."""
    schema = schema or local_schema()
    fields = schema.field_types
    unknown = sorted(set(record) - set(fields))
    if unknown:
        raise ReviewError(f"{context}: unknown field(s) {', '.join(unknown)}")
    try:
        order = Order.from_record(dict(record))
        extra = {k: v for k, v in record.items() if k not in order.to_record()}
        corrected = {**order.to_record(), **extra}
        SchemalessSerde(schema).serialize(corrected)  # the schema the replay writes with
    except ValidationError as exc:
        raise ReviewError(f"{context}: {exc}") from exc
    return corrected


def coerce_field(name: str, text: str, schema: OrderSchema | None = None) -> Any:
    """Turn ``--set name=text`` into the Avro field's Python type."""
    types = (schema or local_schema()).field_types
    if name not in types:
        raise ReviewError(f"unknown field {name!r} (fields: {', '.join(sorted(types))})")
    kind = types[name]
    if isinstance(kind, list):  # a union: "" is null when it may be, else its first non-null
        if text == "" and "null" in kind:
            return None
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise ReviewError(f"{name} must be true or false, got {text!r}")
        return text.lower() == "true"
    convert = NUMBERS.get(kind) if isinstance(kind, str) else None
    if convert is None:
        return text
    try:
        value = convert(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(text)
        return value
    except ValueError as exc:
        raise ReviewError(f"{name} must be a {kind}, got {text!r}") from exc
