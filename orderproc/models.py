"""Domain objects and their vocabulary: an order, where a record came from, review states."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from orderproc.errors import ValidationError

MAX_TEXT = 200
"""The longest ``orderId`` and ``product`` the store holds (characters)."""

MAX_REPLAY_ID = 64
"""The longest replay id the store holds; the replay writes ids that fit (``replay_id_for``)."""

MAX_PRICE = 3.4028234663852886e38
"""The largest finite Avro ``float`` (32-bit): a larger price cannot be written back."""


class Order(NamedTuple):
    """One order, as carried by the Avro ``com.assignment.Order`` record.

    A named tuple rather than a dataclass: the consumer builds one per record, and a
    named tuple is the cheapest immutable object to build (about 150 ns here).
    """

    order_id: str
    product: str
    price: float

    @classmethod
    def from_record(cls, record: Any) -> Order:
        """Build and validate an order from its Avro field names.

        The limits are the store's: an order that passes can always be stored and
        written back as Avro. The price is kept exactly as decoded (Avro ``float`` is
        32-bit, so 45.67 arrives as 45.66999816894531); it is rounded only for display.

        Raises:
            ValidationError: a field is missing, empty, too long, holds NUL, or is out of range.
        """
        if not isinstance(record, dict):
            raise ValidationError(f"missing fields: not a record but {type(record).__name__}")
        order_id, product, price = record.get("orderId"), record.get("product"), record.get("price")
        # Fast path for what the Avro decoder hands us; NaN fails the range check.
        if (
            type(order_id) is str
            and type(product) is str
            and type(price) is float
            and 0.0 <= price <= MAX_PRICE
            and 0 < len(order_id) <= MAX_TEXT
            and 0 < len(product) <= MAX_TEXT
            and not order_id.isspace()
            and not product.isspace()
            and "\x00" not in order_id
            and "\x00" not in product
        ):
            # One per consumed record: tuple.__new__ skips the named tuple's Python-level
            # __new__ (measured with make bench's data: about 0.05 us a record).
            return tuple.__new__(cls, (order_id, product, price))
        return cls._validated(record)

    @classmethod
    def _validated(cls, record: dict[str, Any]) -> Order:
        try:
            order_id, product, price = record["orderId"], record["product"], record["price"]
        except (KeyError, TypeError) as exc:
            raise ValidationError(f"missing field {exc}") from exc
        _check_text("orderId", order_id)
        _check_text("product", product)
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValidationError(f"price is not a number: {_short(price)}")
        if not math.isfinite(price):
            raise ValidationError(f"price is not finite: {price}")
        if price < 0:
            raise ValidationError(f"price is negative: {price}")
        if price > MAX_PRICE:
            raise ValidationError(f"price {price:g} is larger than an Avro float can hold")
        return cls(order_id=order_id, product=product, price=float(price))

    def to_record(self) -> dict[str, Any]:
        """The order with its Avro field names (the original system's JSON shape)."""
        return {"orderId": self.order_id, "product": self.product, "price": self.price}


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} is empty")
    if len(value) > MAX_TEXT:
        raise ValidationError(f"{name} is {len(value)} characters long; the store holds {MAX_TEXT}")
    if "\x00" in value:
        raise ValidationError(f"{name} contains a NUL character, which the store cannot hold")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Source(NamedTuple):
    """Coordinates of the record an order was first read from (a named tuple: one per record)."""

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


class DlqStatus(StrEnum):
    """Review state of a dead-lettered order.

    ``new -> approved | rejected``, ``approved -> replayed``; a row over the replay cap
    becomes ``parked`` instead of ``replayed``.
    """

    NEW = "new"
    APPROVED = "approved"
    REJECTED = "rejected"
    REPLAYED = "replayed"
    PARKED = "parked"


REPLAYABLE_STATUSES = (DlqStatus.APPROVED.value,)
"""Only rows a reviewer approved are replayed."""

UNRESOLVED_STATUSES = (DlqStatus.NEW.value, DlqStatus.APPROVED.value)
"""Rows still waiting for someone: the review backlog (reports and the review page)."""

DEFAULT_MAX_REPLAYS = 3
"""A row whose order was already replayed this many times is parked instead."""

DEFAULT_REPLAY_WAIT_S = 300.0
"""How long a replay run waits for one that holds the replay before it gives up."""

CANARY_PATTERN = r"^(0|[1-9][0-9]{0,8})%?$"
"""A canary: a number of rows (``10``) or a share of the selection (``5%``)."""


def _canary_text(value: Any) -> Any:
    """``10`` (a number, as a JSON conf may send it) reads as ``"10"``; text is trimmed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else value


def _canary_shape(value: str) -> str:
    if not re.fullmatch(CANARY_PATTERN, value):
        raise ValueError(f"{value!r} is neither a number of rows (10) nor a share (5%)")
    return value


Canary = Annotated[
    str,
    BeforeValidator(_canary_text),
    AfterValidator(_canary_shape),
    # the trigger form takes 10 (a number) as well as "10" or "5%"
    Field(
        json_schema_extra={"type": ["integer", "string"], "pattern": CANARY_PATTERN, "minimum": 0}
    ),
]


class ReplayOptions(BaseModel):
    """How a replay runs: the one source of these options' defaults, bounds and words.

    The replay DAG's trigger form is derived from these fields
    (``orderproc.airflow.params.form_params``), ``orderproc dlq replay`` has an option for
    each (a test keeps them equal), and ``ReplayRequest`` (``orderproc.dlq.replay``)
    extends them: a new option is one field here.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    max_messages: int = Field(
        default=100, ge=1, title="Max messages", description="Take at most this many rows."
    )
    rate_per_sec: float = Field(
        default=0.0, ge=0, title="Rate (records/s)", description="0 = unthrottled."
    )
    max_replays: int = Field(
        default=DEFAULT_MAX_REPLAYS,
        ge=1,
        title="Replay cap",
        description="Rows of orders replayed this often already are parked instead.",
    )
    canary: Canary = Field(
        default="10",
        title="Canary",
        description="Published first; the rest waits for the live consumer's verdict on it. "
        "A number of rows (10) or a share of the selection (5%); 0: no canary.",
    )
    step_rows: int = Field(
        default=100,
        ge=1,
        title="Rows per step",
        description="After the canary the rest is published in steps of this many rows, "
        "the outcomes checked again between steps.",
    )
    pause_at_percent: float = Field(
        default=50.0,
        ge=0,
        le=100,
        title="Pause at (% failed again)",
        description="Pause when at least this share of the replayed orders whose outcome is "
        "known failed again (the rows not published yet go back to approved).",
    )
    outcome_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        title="Outcome timeout (s)",
        description="Pause when outcomes of replayed orders have not arrived after this long "
        "(is the consumer running?).",
    )

    def canary_rows(self, selected: int) -> int:
        """How many of ``selected`` rows the canary takes (a share rounds up)."""
        if self.canary.endswith("%"):
            share = min(int(self.canary[:-1]), 100)
            return min(selected, -(-selected * share // 100))
        return min(selected, int(self.canary))


REVIEW_SLO_HOURS = 24.0
"""How long a failure may wait unresolved (new/approved) before someone is told: the
report DAG's default ``slo_hours``, ``orderproc status`` and the ``ReviewBacklogOverSlo``
alert (``deploy/prometheus``; a test keeps them equal)."""


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

    def add_rows(self, rows: Iterable[Any]) -> None:
        """Add many processed rows (anything with ``product`` and ``price``) at once."""
        per = self._per_product
        for row in rows:
            entry = per.get(row.product)
            if entry is None:
                entry = per[row.product] = [0.0, 0.0]
            entry[0] += 1
            entry[1] += row.price

    def per_product(self) -> dict[str, float]:
        return {p: t / n for p, (n, t) in sorted(self._per_product.items()) if n}
