"""A consumed Kafka record, as the worker and the drain see it, and what its headers say.

Everything in a record is untrusted: its key, value and headers come from whoever
wrote to the topic. ``Record.of`` only copies what the client handed over; reading
meaning out of headers (``provenance``, ``retry_due_ms``, ``replay_id``) never
raises: a damaged header reads as absent.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orderproc import headers as h
from orderproc.headers import Header
from orderproc.models import MAX_REPLAY_ID, Source

TP = tuple[str, int]
"""A topic partition as a hashable pair."""


class Provenance(NamedTuple):
    """What the provenance headers say about a record's earlier attempts."""

    attempts: int
    first_failure_ms: int | None
    source: Source


class Record(NamedTuple):
    """The parts of a Kafka message orderproc uses, with the client's Optionals resolved.

    A named tuple: the consumer builds one per record, and it is the cheapest
    immutable object to build (``orderproc.models.Order`` says the same).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp_ms: int | None = None
    header_problem: str | None = None
    """Why the headers could not be read (they are then empty); None when they could."""

    @classmethod
    def of(cls, msg: Any) -> Record:
        """Copy a consumed ``confluent_kafka.Message`` (one without an error: its topic,
        partition and offset are set); its headers are read once (``headers.read``).

        One per consumed record: ``tuple.__new__`` skips the named tuple's Python-level
        ``__new__`` (0.23 to 0.18 us here), and most records have no headers to copy.
        """
        kind, ts = msg.timestamp()
        headers, problem = h.read(msg)
        return tuple.__new__(cls, (
            msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
            headers, ts if kind and ts > 0 else None, problem,
        ))  # fmt: skip

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    @property
    def coordinates(self) -> str:
        """``topic[partition]@offset``, for log lines and DLQ echoes."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def replay_id(self) -> str | None:
        """The replay run that published this record, if any (lineage header).

        Only an id the replay could have written counts (at most ``MAX_REPLAY_ID``
        characters, no NUL): a foreign header must not make the store refuse the row.
        """
        value = h.text(self.headers, h.REPLAY_ID)
        if value is None or len(value) > MAX_REPLAY_ID or "\x00" in value:
            return None
        return value

    @property
    def retry_due_ms(self) -> int | None:
        """When a retry-topic record is due (epoch ms), if it says so."""
        return h.integer(self.headers, h.RETRY_DUE_MS)

    @property
    def own_source(self) -> Source:
        """This record's own coordinates."""
        return Source(self.topic, self.partition, self.offset, self.timestamp_ms)

    @property
    def has_provenance_headers(self) -> bool:
        """Whether the record carries any ``orderproc.*`` header (trusted or not)."""
        return any(k.startswith(h.PREFIX) for k, _ in self.headers)

    def provenance(self) -> Provenance:
        """Attempts so far, first failure time and original source, *as the headers say*.

        Headers are untrusted: the consumer checks what this returns against the
        topic the record was read from (``orderproc.worker.decide``). A record
        without complete provenance headers reads as 0 attempts at its own coordinates.
        """
        own = Provenance(
            0, None, Source(self.topic, self.partition, self.offset, self.timestamp_ms)
        )
        if not self.headers:
            return own
        said = h.first_values(self.headers)
        attempts = h.parse_int(said.get(h.ATTEMPTS))
        if attempts is None:
            return own
        topic = said.get(h.SOURCE_TOPIC)
        partition = h.parse_int(said.get(h.SOURCE_PARTITION))
        offset = h.parse_int(said.get(h.SOURCE_OFFSET))
        if topic is None or partition is None or offset is None:
            return own  # damaged headers: start over rather than lose the record
        source = Source(
            topic.decode("utf-8", "replace"),
            partition,
            offset,
            h.parse_int(said.get(h.SOURCE_TIMESTAMP_MS)),
        )
        return Provenance(attempts, h.parse_int(said.get(h.FIRST_FAILURE_MS)), source)
