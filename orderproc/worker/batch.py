"""What the consumer keeps while it handles a batch, and what a run did."""

from __future__ import annotations

from dataclasses import dataclass, field

from orderproc.records import TP, Record
from orderproc.store.processed import ProcessedRow
from orderproc.worker.offsets import PendingBatch


@dataclass
class ConsumerStats:
    """What one run did; returned by ``OrderConsumer.run``."""

    consumed: int = 0
    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dead_lettered_by_category: dict[str, int] = field(default_factory=dict)
    average_price: float = 0.0
    flood_breaker_trips: int = 0


@dataclass
class Batch(PendingBatch):
    """One consumed batch while it is handled: its rows and per-topic counts."""

    first_offsets: dict[TP, int] = field(default_factory=dict)  # where to read it again
    rows: list[ProcessedRow] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # the record of each row
    consumed: dict[str, int] = field(default_factory=dict)
