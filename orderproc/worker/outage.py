"""A schema registry that does not answer: hold the partitions that need it, back off, say so once.

The consumer reads records whose schema id is cached without the registry; only a
record that needs it (a schema id not seen yet) waits. Its partition is held at that
record (paused and rewound, ``orderproc.worker.holds``), so nothing of it past what was
handled is committed, and tried again after a backoff that doubles up to
``registry_backoff_max_s``. The other partitions go on. The consumer logs once that it
waits, and once that the registry answers again; no record is dead-lettered for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from orderproc.records import TP

log = logging.getLogger(__name__)

FIRST_WAIT_S = 0.5


class RegistryOutage:
    """Which partitions wait for the registry, and how long the next wait is."""

    def __init__(self, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait_s = max_wait_s
        self._clock = clock
        self.waiting: set[TP] = set()
        self._next_s = FIRST_WAIT_S
        self._since: float | None = None

    def wait_s(self, tp: TP, reason: str) -> float:
        """``tp`` needs the registry, which did not answer: how long to hold it."""
        if self._since is None:
            self._since = self._clock()
            log.warning("waiting for the schema registry (%s); records that need it wait, "
                        "nothing is dead-lettered for it", reason)  # fmt: skip
        self.waiting.add(tp)
        wait, self._next_s = self._next_s, min(self._next_s * 2, self.max_wait_s)
        return wait

    def read(self, tp: TP) -> None:
        """A record of ``tp`` was read without waiting for the registry."""
        if tp not in self.waiting:
            return
        self.waiting.discard(tp)
        if not self.waiting and self._since is not None:
            log.warning("the schema registry answers again after %.1f s; consuming",
                        self._clock() - self._since)  # fmt: skip
            self._since, self._next_s = None, FIRST_WAIT_S

    def forget(self, partitions: set[TP]) -> None:
        """Partitions were revoked (or rewound): they wait for nothing any more."""
        self.waiting -= partitions
