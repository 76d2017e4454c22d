"""The registry scenarios' shared values (a module, so conftests and tests import it, never
each other): later versions of the order schema, and the shapes the fixtures return."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orderproc.serde import local_schema
from orderproc.worker.consumer import ConsumerStats


def order_schema(*extra: dict[str, Any], drop: Sequence[str] = ()) -> str:
    """``order.avsc`` with ``extra`` fields and without the fields named in ``drop``."""
    base = json.loads(local_schema().text)
    base["fields"] = [f for f in base["fields"] if f["name"] not in drop] + list(extra)
    return json.dumps(base)


V2 = order_schema({"name": "currency", "type": "string", "default": "EUR"})
"""v1 + a field with a default."""
V3 = order_schema({"name": "channel", "type": "string", "default": "web"})
"""v2 without ``currency`` (it had a default) + ``channel`` with a default."""
V4 = order_schema({"name": "sales_channel", "type": "string", "default": "web",
                   "aliases": ["channel"]})  # fmt: skip
"""v3 with ``channel`` renamed ``sales_channel``, the old name kept as an alias."""
INCOMPATIBLE = order_schema({"name": "currency", "type": "string"})
"""A field added without a default: a reader of it cannot read v1."""


@dataclass
class Subject:
    """This test's subject and the ids its versions were registered with."""

    name: str
    ids: dict[str, int]


@dataclass
class Run:
    stats: ConsumerStats
    processed: dict[str, float]
    """orderId -> price of every row in ``processed_orders``."""
