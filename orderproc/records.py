"""A consumed Kafka record, with what the consumer reads from its headers."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

from orderproc.dlq import Header, header_map, normalize_headers
from orderproc.models import Source

TP = tuple[str, int]

REPLAY_ID_HEADER = "replay.id"
"""Set by the replay DAG; kept across retry/DLQ hops like any header that is not ours."""


@dataclass(slots=True)
class Record:
    """The parts of a Kafka message the consumer uses, with the Optionals resolved.

    Built only on the slow path (retry topics, failures, records with headers);
    plain records of the main topic are handled straight from the ``Message``.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    timestamp_ms: int | None
    _provenance: tuple[int, int | None, Source] | None = None

    @classmethod
    def of(cls, msg: Message) -> Record:
        kind, ts = msg.timestamp()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=normalize_headers(msg.headers()),
            timestamp_ms=int(ts) if kind and ts > 0 else None,
        )

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    def header_int(self, name: str) -> int | None:
        for key, value in self.headers:
            if key == name and value:
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    @property
    def replay_id(self) -> str | None:
        for key, value in self.headers:
            if key == REPLAY_ID_HEADER and value:
                return value.decode("utf-8", "replace")
        return None

    def provenance(self) -> tuple[int, int | None, Source]:
        """Attempts so far, first failure time and original source, from our headers.

        A record of the main topic has none of them: 0 attempts, its own coordinates.
        """
        if self._provenance is None:
            self._provenance = self._read_provenance()
        return self._provenance

    def _read_provenance(self) -> tuple[int, int | None, Source]:
        meta = header_map(self.headers) if self.headers else {}
        own = Source(self.topic, self.partition, self.offset, self.timestamp_ms)
        if "attempts" not in meta:
            return 0, None, own
        try:
            attempts = int(meta["attempts"])
            first = int(meta["first.failure.ms"]) if meta.get("first.failure.ms") else None
            source = Source(
                meta["source.topic"],
                int(meta["source.partition"]),
                int(meta["source.offset"]),
                int(meta["source.timestamp.ms"]) if meta.get("source.timestamp.ms") else None,
            )
        except (KeyError, ValueError):
            return 0, None, own  # damaged headers: start over rather than lose the record
        return attempts, first, source
