"""Where processed orders go: the store write that waits out a database outage, and the
``Processed ...`` lines, running average and metrics for the orders that were new."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from orderproc.errors import StoreError
from orderproc.metrics import ConsumerMetrics
from orderproc.models import RunningAverage
from orderproc.store.processed import OrderRepository, ProcessedRow

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


class ProcessedSink:
    """Writes a batch's processed orders; counts only the ones that were not stored before."""

    def __init__(
        self,
        repository: OrderRepository,
        metrics: ConsumerMetrics,
        stop: threading.Event,
        echo: Callable[[str], None] | None,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.average = RunningAverage(repository.price_totals())
        self._stop = stop
        self._echo = echo

    def write(self, rows: Sequence[ProcessedRow]) -> tuple[int, int]:
        """Store ``rows`` (waiting for the database if it is down); return (new, duplicates).

        Raises:
            StoreError: the database failed and a stop was requested before it recovered.
        """
        new_ids = self._persist(rows)
        if self._echo is None and len(new_ids) == len(rows):  # no lines, no redeliveries
            self.average.add_rows(rows)
            self._count(len(rows), 0)
            return len(rows), 0
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
        return processed, duplicates

    def _count(self, processed: int, duplicates: int) -> None:
        self.metrics.processed.inc(processed)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        self.metrics.running_average.set(self.average.overall)

    def _persist(self, rows: Sequence[ProcessedRow]) -> set[str]:
        delay = 0.5
        while True:
            try:
                return self.repository.record_processed(rows)
            except StoreError as exc:
                # The database is down, not the orders: wait for it instead of dead-lettering.
                log.error("%s; retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, MAX_BACKOFF_S)
