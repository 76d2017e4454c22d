"""How orders are laid out on the wire, and the one place that chooses it: ``serde_for``.

* ``schemaless``: plain Avro with the schema compiled in (the original system's, the
  default without a registry URL): ``orderproc.serde.schemaless``.
* ``registry``: the Confluent wire format with schema ids from a registry, schema
  evolution by Avro resolution: ``orderproc.serde.wire`` over ``orderproc.serde.registry``.

Both keep confluent-kafka's serializer contract (``orderproc.serde.base``); the schema
and its fields are ``orderproc.serde.schemas``.
"""

from __future__ import annotations

from orderproc.config import Settings, WireFormat
from orderproc.serde.base import OrderSerde, SerializationContext, value_context
from orderproc.serde.schemaless import SchemalessSerde
from orderproc.serde.schemas import OrderSchema, load_schema, local_schema, schema_path
from orderproc.serde.wire import RegistrySerde

__all__ = [
    "OrderSchema",
    "OrderSerde",
    "RegistrySerde",
    "SchemalessSerde",
    "SerializationContext",
    "load_schema",
    "local_schema",
    "schema_path",
    "serde_for",
    "value_context",
]


def serde_for(settings: Settings, *, latest: bool = False) -> OrderSerde:
    """The wire format the settings choose.

    ``latest``: write with the subject's latest registered schema instead of this
    build's (the replay and corrections: fields added since are kept). Schemaless has
    one schema only.
    """
    if settings.effective_wire_format is WireFormat.REGISTRY:
        return RegistrySerde.from_settings(settings, latest=latest)
    return SchemalessSerde()
