"""Orders in the Confluent wire format: magic byte 0, the 4-byte schema id, the Avro body.

Writing: the schema is looked up (never registered, unless the settings allow it: the
dev stack) under the subject of the record's topic, once per subject; with
``latest=True`` (the replay and the review page) the subject's latest version is used
instead of this build's, so fields added later can be written.

Reading: the writer schema is fetched once per id and kept parsed (at most
``cache_size`` ids, the oldest dropped first), then the body is read with Avro schema
resolution into this build's reader schema: a writer that added a field with a
default, dropped one that had a default or renamed one behind an alias is read, never
dead-lettered. A record's own failures are ``DeserializationError`` with its schema id:
no magic byte, an id the registry does not know (remembered ``NEGATIVE_TTL_S`` so a
flood of them does not flood the registry), a writer schema that cannot be read as
ours (category ``schema``), bytes that do not match their schema. A registry that does
not answer is ``RegistryUnavailableError``: an outage, never the record's fault.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fastavro.read import SchemaResolutionError

from orderproc.config import Settings, SubjectStrategy, WireFormat
from orderproc.errors import (
    DeserializationError,
    ErrorCategory,
    RegistryError,
    RegistryRefusedError,
    RegistryUnavailableError,
)
from orderproc.models import Order
from orderproc.serde.base import OrderSerde, SerializationContext, avro_body
from orderproc.serde.registry import SUBJECT_NOT_FOUND, RegistryClient
from orderproc.serde.schemaless import read_body
from orderproc.serde.schemas import OrderSchema, local_schema, unreadable

MAGIC = 0
HEADER = struct.Struct(">bI")
NEGATIVE_TTL_S = 30.0
"""An unknown id is asked again after this long (it may have been registered since)."""


class Writer(NamedTuple):
    """What reading a schema id needs, or why records of it cannot be read."""

    writer: Any
    reader: Any
    """Our reader schema, or None when the writer's is the same (no resolution needed)."""
    problem: str | None = None
    expires: float | None = None
    label: str | None = None
    """``orders-value v3``: where the registry keeps the id (when it said)."""


class RegistrySerde(OrderSerde):
    """The registry wire format; see the module docstring."""

    wire_format = WireFormat.REGISTRY

    def __init__(
        self,
        client: RegistryClient,
        *,
        topic: str,
        strategy: SubjectStrategy = SubjectStrategy.TOPIC,
        auto_register: bool = False,
        latest: bool = False,
        cache_size: int = 1000,
        reader: OrderSchema | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.topic = topic
        self.strategy = strategy
        self.auto_register = auto_register
        self.latest = latest
        self.cache_size = cache_size
        self.reader = reader or local_schema()
        self._clock = clock
        self._writers: dict[int, Writer] = {}
        self._readable: dict[bytes, tuple[Any, Any, int]] = {}
        """Wire header (magic byte + id) -> writer, reader, id: the ids records can be read with."""
        self._subjects: dict[str, OrderSchema] = {}
        self._lock = threading.Lock()  # the review page serves requests on several threads

    @classmethod
    def from_settings(cls, settings: Settings, *, latest: bool = False) -> RegistrySerde:
        return cls(
            RegistryClient.from_settings(settings),
            topic=settings.orders_topic,
            strategy=settings.subject_strategy,
            auto_register=settings.schema_auto_register,
            latest=latest,
            cache_size=settings.schema_cache_size,
        )

    def subject(self, topic: str | None = None) -> str:
        """The subject of ``topic``'s values under the naming strategy."""
        topic = topic or self.topic
        if self.strategy is SubjectStrategy.RECORD:
            return self.reader.full_name
        if self.strategy is SubjectStrategy.TOPIC_RECORD:
            return f"{topic}-{self.reader.full_name}"
        return f"{topic}-value"

    # -- writing -----------------------------------------------------------------------

    def writer_schema(self, ctx: SerializationContext | None = None) -> OrderSchema:
        subject = self.subject(ctx.topic if ctx is not None else None)
        known = self._subjects.get(subject)
        if known is None:
            known = self._subjects[subject] = self._resolve(subject)
        return known

    def serialize(
        self, obj: Order | Mapping[str, Any], ctx: SerializationContext | None = None
    ) -> bytes:
        schema = self.writer_schema(ctx)
        return HEADER.pack(MAGIC, schema.schema_id or 0) + avro_body(schema, obj)

    def _resolve(self, subject: str) -> OrderSchema:
        where = f"the schema registry at {self.client.url}"
        try:
            if self.latest:
                found = self.client.version(subject, "latest")
            else:
                found = self.client.lookup(subject, self.reader.text)
        except (RegistryUnavailableError, RegistryRefusedError):
            raise
        except RegistryError as exc:
            if exc.status != 404:
                raise
            if self.auto_register and not self.latest:
                schema_id = self.client.register(subject, self.reader.text)
                found = self.client.lookup(subject, self.reader.text)
                return OrderSchema.of(found.text, schema_id=schema_id, subject=subject,
                                      version=found.version)  # fmt: skip
            what = f"subject {subject} is not registered at {where}"
            if exc.error_code != SUBJECT_NOT_FOUND and not self.latest:
                what = f"this build's order schema is not registered under {subject} at {where}"
            raise RegistryError(
                f"{what}: register it with `orderproc schemas register`",
                status=exc.status, error_code=exc.error_code,
            ) from None  # fmt: skip
        return OrderSchema.of(found.text, schema_id=found.schema_id, subject=subject,
                              version=found.version)  # fmt: skip

    # -- reading -----------------------------------------------------------------------

    def schema_id_of(self, data: bytes | None) -> int | None:
        if data is None or len(data) < HEADER.size or data[0] != MAGIC:
            return None
        return int(HEADER.unpack_from(data)[1])

    def deserialize(
        self, data: bytes | None, ctx: SerializationContext | None = None
    ) -> dict[str, Any]:
        if data is None or len(data) < HEADER.size or data[0] != MAGIC:
            raise DeserializationError(_no_magic(data), data)
        schema_id = HEADER.unpack_from(data)[1]
        entry = self._writers.get(schema_id)
        if entry is None or entry.expires is not None:
            entry = self.writer(schema_id)
        if entry.problem is not None:
            raise DeserializationError(entry.problem, data, schema_id=schema_id,
                                       category=ErrorCategory.SCHEMA)  # fmt: skip
        try:
            return read_body(data, HEADER.size, entry.writer, entry.reader, schema_id)
        except SchemaResolutionError as exc:
            raise DeserializationError(
                f"writer schema id {schema_id} cannot be read as {self.reader.full_name}: {exc}",
                data, schema_id=schema_id, category=ErrorCategory.SCHEMA,
            ) from exc  # fmt: skip

    def decode(self, data: bytes | None) -> Order:
        # Once per record: the header itself is the cache key (one slice, one lookup; the
        # magic byte comes with it). Worth about 10 % of the registry consumer's throughput
        # against going through deserialize (make bench, registry_ratio); anything unusual
        # takes deserialize's way, which names the precise failure.
        readable = self._readable.get(data[:5]) if data else None
        if readable is None:
            return Order.from_record(self.deserialize(data))
        writer, reader, schema_id = readable
        try:
            return Order.from_record(read_body(data, 5, writer, reader, schema_id))
        except SchemaResolutionError:
            return Order.from_record(self.deserialize(data))

    def label(self, schema_id: int) -> str | None:
        """Where the registry keeps ``schema_id`` (``orders-value v3``), if already known."""
        entry = self._writers.get(schema_id)
        return entry.label if entry is not None else None

    def writer(self, schema_id: int) -> Writer:
        """The cached entry of ``schema_id``, fetched when missing or expired.

        Raises:
            RegistryUnavailableError: the registry does not answer (nothing is cached).
            RegistryRefusedError: the registry refuses our credentials.
        """
        now = self._clock()
        with self._lock:
            entry = self._writers.get(schema_id)
            if entry is not None and (entry.expires is None or entry.expires > now):
                return entry
        entry = self._fetch(schema_id, now)
        with self._lock:
            self._writers.pop(schema_id, None)
            while len(self._writers) >= self.cache_size:
                oldest = next(iter(self._writers))  # the oldest fetched goes first
                del self._writers[oldest]
                self._readable.pop(HEADER.pack(MAGIC, oldest), None)
            self._writers[schema_id] = entry
            if entry.problem is None:
                self._readable[HEADER.pack(MAGIC, schema_id)] = (entry.writer, entry.reader,
                                                                 schema_id)  # fmt: skip
        return entry

    def _fetch(self, schema_id: int, now: float) -> Writer:
        try:
            text, kind = self.client.schema(schema_id)
        except (RegistryUnavailableError, RegistryRefusedError):
            raise
        except RegistryError as exc:
            if exc.status != 404:
                raise
            where = f"the schema registry at {self.client.url}"
            why = f"unknown schema id {schema_id}: {where} has no such schema"
            return Writer(None, None, why, now + NEGATIVE_TTL_S)
        label = self._where(schema_id)
        if kind.upper() != "AVRO":
            return Writer(None, None, f"schema id {schema_id} is a {kind} schema, not Avro", None,
                          label)  # fmt: skip
        try:
            written = OrderSchema.of(text, schema_id=schema_id)
        except ValueError as exc:
            return Writer(None, None, f"schema id {schema_id} is {exc}", None, label)
        cannot = unreadable(written.parsed, self.reader.parsed)
        if cannot is not None:
            return Writer(None, None, f"writer schema id {schema_id} ({written.full_name}) "
                          f"cannot be read as {self.reader.full_name}: {cannot}", None,
                          label)  # fmt: skip
        same = written.canonical == self.reader.canonical
        return Writer(written.parsed, None if same else self.reader.parsed, label=label)

    def _where(self, schema_id: int) -> str | None:
        try:
            places = self.client.where_is(schema_id)
        except RegistryError:  # an older registry without the call: the id alone will do
            return None
        mine = [p for p in places if p[0] == self.subject()] or places
        return f"{mine[0][0]} v{mine[0][1]}" if mine else None


def _no_magic(data: bytes | None) -> str:
    if not data:
        return "empty value: not the registry wire format (no magic byte)"
    if data[0] != MAGIC:
        return f"no magic byte: the value starts with 0x{data[0]:02x}, not the registry wire format"
    return f"a {len(data)}-byte value is too short for the registry wire format (magic byte and id)"
