"""Why one version of the order schema cannot follow another, in one line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orderproc.dlq.corrections import coerce_field, validated_order
from orderproc.errors import ReviewError
from orderproc.serde import OrderSchema, local_schema
from orderproc.serde.schemas import why_incompatible

pytestmark = pytest.mark.unit


def version(*fields: dict[str, Any], name: str = "Order", number: int = 1) -> OrderSchema:
    schema = {"type": "record", "name": name, "namespace": "com.assignment",
              "fields": [{"name": "orderId", "type": "string"}, *fields]}  # fmt: skip
    return OrderSchema.of(json.dumps(schema), schema_id=number, subject="s", version=number)


V1 = version({"name": "price", "type": "float"})


@pytest.mark.parametrize(
    ("candidate", "level", "why"),
    [
        (version({"name": "price", "type": "float"},
                 {"name": "c", "type": "string", "default": "x"}), "BACKWARD", None),
        (version({"name": "price", "type": "float"}, {"name": "c", "type": "string"}), "BACKWARD",
         "a reader of the new schema cannot read version 1: field c (string) is not in it and has "
         "no default"),
        (version({"name": "price", "type": "double"}), "BACKWARD", None),  # float -> double
        (version({"name": "price", "type": "double"}), "FULL",
         "a reader of version 1 cannot read the new schema: field price is double in the writer, "
         "float here"),
        (version({"name": "price", "type": "string"}), "BACKWARD",
         "a reader of the new schema cannot read version 1: field price is float in the writer, "
         "string here"),
        (version({"name": "amount", "type": "float", "aliases": ["price"]}), "BACKWARD", None),
        (version({"name": "price", "type": "float"}, name="Payment"), "BACKWARD",
         "a reader of the new schema cannot read version 1: record com.assignment.Order is not "
         "com.assignment.Payment (and no alias says so)"),
        (version({"name": "price", "type": "string"}), "NONE", None),
        (version(), "FORWARD",  # price dropped, and v1 has no default for it
         "a reader of version 1 cannot read the new schema: field price (float) is not in it "
         "and has no default"),
    ],
)  # fmt: skip
def test_each_rule_of_schema_resolution_is_named(
    candidate: OrderSchema, level: str, why: str | None
) -> None:
    assert why_incompatible(candidate, [V1], level) == why


def test_transitive_levels_check_every_version_the_others_only_the_latest() -> None:
    v2 = version({"name": "price", "type": "float"}, {"name": "c", "type": "int", "default": 0},
                 number=2)  # fmt: skip
    v3 = version({"name": "price", "type": "float"}, {"name": "c", "type": "string"}, number=3)

    assert why_incompatible(v3, [V1, v2], "BACKWARD") is not None  # c: int -> string
    dropped = version({"name": "price", "type": "float"}, number=3)
    assert why_incompatible(dropped, [V1, v2], "FORWARD") is None
    assert why_incompatible(dropped, [V1, v2], "FORWARD_TRANSITIVE") is None


V2 = OrderSchema.of(json.dumps({**json.loads(local_schema().text), "fields": [
    *json.loads(local_schema().text)["fields"],
    {"name": "currency", "type": "string", "default": "EUR"},
    {"name": "note", "type": ["null", "string"], "default": None},
]}))  # fmt: skip


def test_fields_a_later_version_added_are_editable_and_typed_by_it() -> None:
    assert coerce_field("currency", "USD", V2) == "USD"
    assert coerce_field("note", "", V2) is None
    assert coerce_field("price", "42.5", V2) == 42.5
    with pytest.raises(ReviewError, match="unknown field 'currency'"):
        coerce_field("currency", "USD")  # the local schema has no such field

    order = {"orderId": "o", "product": "p", "price": 1.0}
    assert validated_order({**order, "currency": "USD"}, schema=V2) == {**order, "currency": "USD"}
    assert validated_order(order, schema=V2) == order  # defaults fill in when written
    with pytest.raises(ReviewError, match="unknown field"):
        validated_order({**order, "currency": "USD"})
