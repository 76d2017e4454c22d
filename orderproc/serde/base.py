"""The serializer contract every wire format keeps: ``(obj, ctx) -> bytes`` and back.

As confluent-kafka's serializers: ``serialize(obj, ctx)`` turns an order (an ``Order``
or a dict with the Avro field names: ``Order.to_record``/``from_record`` are the
hooks, so the domain never imports Avro) into a record value; ``deserialize(data, ctx)``
turns a value into the dict its writer meant, read into this build's schema. The
context carries the topic (which names the registry subject) and the headers.
``decode`` is the consumer's call: deserialize and validate one order.
"""

from __future__ import annotations

import io
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import fastavro
from confluent_kafka.serialization import MessageField, SerializationContext

from orderproc.config import WireFormat
from orderproc.errors import RegistryUnavailableError, ValidationError
from orderproc.models import Order
from orderproc.serde.schemas import OrderSchema

__all__ = ["MessageField", "OrderSerde", "SerializationContext", "value_context"]

log = logging.getLogger(__name__)


def value_context(
    topic: str, headers: list[tuple[str, bytes]] | None = None
) -> SerializationContext:
    """The context of a record value of ``topic``."""
    return SerializationContext(topic, MessageField.VALUE, headers)  # type: ignore[arg-type]


class OrderSerde(ABC):
    """An order's wire format; build one with ``orderproc.serde.serde_for(settings)``."""

    wire_format: WireFormat

    @abstractmethod
    def writer_schema(self, ctx: SerializationContext | None = None) -> OrderSchema:
        """The schema ``serialize`` writes with for ``ctx``'s topic (its id when registered).

        Raises:
            RegistryError: the registry cannot say (unreachable, refused, not registered).
        """

    def writer_schema_within(
        self,
        timeout_s: float,
        ctx: SerializationContext | None = None,
        *,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> OrderSchema:
        """``writer_schema``, waiting (backoff 0.5 s doubling to 10 s) while the registry
        does not answer, at most ``timeout_s``: an outage delays a job, then fails it.

        Raises:
            RegistryUnavailableError: still no answer after ``timeout_s``.
        """
        deadline, wait = time.monotonic() + timeout_s, 0.5
        while True:
            try:
                return self.writer_schema(ctx)
            except RegistryUnavailableError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning("waiting for the schema registry (%s)", exc)
                sleep(min(wait, left))
                wait = min(wait * 2, 10.0)

    @abstractmethod
    def serialize(
        self, obj: Order | Mapping[str, Any], ctx: SerializationContext | None = None
    ) -> bytes:
        """The record value for ``obj``; a wrong shape is a ``ValidationError``."""

    @abstractmethod
    def deserialize(
        self, data: bytes | None, ctx: SerializationContext | None = None
    ) -> dict[str, Any]:
        """The record a value holds, in this build's schema, without domain validation.

        Raises:
            DeserializationError: the bytes are not an order of this wire format.
            RegistryUnavailableError: the registry must be asked and does not answer.
        """

    def decode(self, data: bytes | None) -> Order:
        """Deserialize and validate one order (the consumer's call, once per record)."""
        return Order.from_record(self.deserialize(data))

    def schema_id_of(self, data: bytes | None) -> int | None:
        """The schema id a value names, if this wire format has one and the value says it."""
        return None

    def label(self, schema_id: int) -> str | None:
        """Where the registry keeps ``schema_id`` (``orders-value v3``), when known."""
        return None

    # -- the names older callers know --------------------------------------------------

    def encode(self, order: Order) -> bytes:
        return self.serialize(order)

    def encode_record(self, record: Mapping[str, Any]) -> bytes:
        return self.serialize(record)

    def decode_record(self, raw: bytes | None) -> dict[str, Any]:
        return self.deserialize(raw)


def avro_body(schema: OrderSchema, obj: Order | Mapping[str, Any]) -> bytes:
    """``obj`` written with ``schema`` (fields with a default may be left out)."""
    record: Mapping[str, Any]
    price: Any
    if isinstance(obj, Order):
        record, price = obj.to_record(), obj.price
    else:
        record, price = obj, obj.get("price") if isinstance(obj, Mapping) else None
    # fastavro writes a float with float(): "12.5" or True would be encoded silently. A
    # plain float, the usual case, is let through first, and an Order's fields are read
    # without asking whether it is a Mapping (an ABC check): 5.8 against 7.5 us an order.
    plain = type(price) is float
    if not plain and (isinstance(price, bool) or not isinstance(price, int | float | None)):
        raise ValidationError(f"not a valid Order record: price must be a number, got {price!r}")
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValidationError(f"not a valid Order record: {exc}") from exc
    return buf.getvalue()
