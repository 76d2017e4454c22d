"""Corrections a reviewer makes to a dead-lettered order, validated before they are saved.

A correction must be a valid Avro ``Order`` (the schema is the contract the consumer
reads) and pass the order's own validation; the original stays beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from orderproc.errors import ReviewError, ValidationError
from orderproc.models import Order
from orderproc.serde import OrderSerde, load_schema
from orderproc.store.tables import DlqEvent


def payload_of(event: DlqEvent) -> dict[str, Any] | None:
    """The order a replay would publish: the correction if any, else the failed order."""
    if event.corrected_payload:
        return dict(event.corrected_payload)
    if event.order_id is None or event.product is None or event.price is None:
        return None
    return {"orderId": event.order_id, "product": event.product, "price": event.price}


def validated_order(record: Mapping[str, Any], *, context: str = "order") -> dict[str, Any]:
    """The record as a valid Avro ``Order`` dict; ``ReviewError`` if it is not one."""
    fields = {f["name"] for f in load_schema()["fields"]}
    unknown = sorted(set(record) - fields)
    if unknown:
        raise ReviewError(f"{context}: unknown field(s) {', '.join(unknown)}")
    try:
        order = Order.from_record(dict(record))
        OrderSerde().encode(order)  # the Avro schema is the contract the consumer reads
    except ValidationError as exc:
        raise ReviewError(f"{context}: {exc}") from exc
    return order.to_record()


def coerce_field(name: str, text: str) -> Any:
    """Turn ``--set name=text`` into the Avro field's Python type."""
    types = {f["name"]: f["type"] for f in load_schema()["fields"]}
    if name not in types:
        raise ReviewError(f"unknown field {name!r} (fields: {', '.join(sorted(types))})")
    kind = types[name]
    try:
        if kind in ("float", "double"):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if kind in ("int", "long"):
            return int(text)
    except ValueError as exc:
        raise ReviewError(f"{name} must be a {kind}, got {text!r}") from exc
    return text
