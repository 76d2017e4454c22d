"""Where processed orders go: the store write that waits out a database outage and isolates
rows the database refuses, and the ``Processed ...`` lines, running average and metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orderproc.clock import now_ms
from orderproc.dlq.envelope import Failure
from orderproc.errors import RowsRefusedError, StoreError, StoreRefusedError
from orderproc.metrics import ConsumerMetrics
from orderproc.models import Order, RunningAverage, Source
from orderproc.records import Record
from orderproc.store.isolate import write_isolating
from orderproc.store.processed import OrderRepository, ProcessedRow

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass
class Written:
    """What one ``ProcessedSink.write`` did; ``refused``: the records to dead-letter instead."""

    processed: int = 0
    duplicates: int = 0
    refused: list[tuple[Record, Failure]] = field(default_factory=list)


class ProcessedSink:
    """Writes a batch's processed orders; counts only the ones that were not stored before."""

    def __init__(
        self,
        repository: OrderRepository,
        metrics: ConsumerMetrics,
        stop: threading.Event,
        echo: Callable[[str], None] | None,
        consumer_group: str = "",
    ) -> None:
        self.repository = repository
        self.consumer_group = consumer_group
        self.metrics = metrics
        self.average = RunningAverage(repository.price_totals())
        self._stop = stop
        self._echo = echo

    def write(self, rows: Sequence[ProcessedRow], records: Sequence[Record]) -> Written:
        """Store ``rows`` (``records[i]`` is the record of ``rows[i]``), waiting for the
        database if it is down.

        Rows the database refuses (it is up, but a value breaks a column) come back as
        failures in ``Written.refused``; every other row is stored.

        Raises:
            StoreError: the database failed and a stop was requested before it recovered.
        """
        new_ids, refused_rows = self._persist(rows)
        refused = []
        if refused_rows:
            record_of = {id(row): rec for row, rec in zip(rows, records, strict=True)}
            refused = [(record_of[id(r)], self._failure(record_of[id(r)], r, e))
                       for r, e in refused_rows]  # fmt: skip
            gone = {id(row) for row, _ in refused_rows}
            rows = [row for row in rows if id(row) not in gone]
        if self._echo is None and len(new_ids) == len(rows):  # no lines, no redeliveries
            self.average.add_rows(rows)
            self._count(len(rows), 0)
            return Written(len(rows), 0, refused)
        processed = 0
        for row in rows:
            if row.order_id not in new_ids:  # already stored: a redelivery
                continue
            new_ids.discard(row.order_id)
            self.average.add(row.product, row.price)
            processed += 1
            if self._echo is not None:
                avg = self.average.overall
                self._echo(f"Processed {row.order_id} | price={row.price:.2f} | avg={avg:.2f}")
        duplicates = len(rows) - processed
        self._count(processed, duplicates)
        return Written(processed, duplicates, refused)

    def _failure(self, rec: Record, row: ProcessedRow, exc: RowsRefusedError) -> Failure:
        error = StoreRefusedError(f"the store refused this order: {exc}").about(rec)
        log.error("%s: %s", rec.coordinates, error)
        now = now_ms()
        return Failure(
            error=error,
            attempts=row.attempts,
            first_failure_ms=now,
            last_failure_ms=now,
            source=Source(row.source_topic, row.source_partition, row.source_offset, None),
            consumer_group=self.consumer_group,
            order=Order(row.order_id, row.product, row.price),
            raw_value=rec.value,
            key=rec.key,
        )

    def _count(self, processed: int, duplicates: int) -> None:
        self.metrics.processed.inc(processed)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        self.metrics.running_average.set(self.average.overall)

    def _persist(
        self, rows: Sequence[ProcessedRow]
    ) -> tuple[set[str], list[tuple[ProcessedRow, RowsRefusedError]]]:
        delay = 0.5
        while True:
            try:
                written, refused = write_isolating(rows, self.repository.record_processed)
                return set().union(*written), refused
            except StoreError as exc:
                # The database is down, not the orders: wait for it instead of dead-lettering.
                log.error("%s; retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, MAX_BACKOFF_S)
