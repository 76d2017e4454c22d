"""The flood breaker: stop dead-lettering the whole stream when most records fail.

``FloodBreaker`` is the pure counting rule; ``FloodGuard`` wires it into the
consumer: which outcomes count, the log line and the metrics when it trips and
when its cooldown ends.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from orderproc.metrics import ConsumerMetrics

log = logging.getLogger(__name__)


class FloodBreaker:
    """Trips when more than ``ratio`` of the last ``window`` outcomes were failures.

    A bad deploy or a broken schema makes every record fail; dead-lettering them
    all would bury the DLQ and hide the cause. Once tripped, the consumer pauses
    and stays paused for ``cooldown_s``, then tries again with an empty window
    (half-open). The window must be full before the ratio counts, so a few early
    failures never trip it; the original workload (about 36 % failing) stays far
    below the 0.8 default.
    """

    def __init__(
        self,
        window: int,
        ratio: float,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1 or not 0 < ratio <= 1:
            raise ValueError("window must be positive and ratio in (0, 1]")
        self.window, self.ratio, self.cooldown_s = window, ratio, cooldown_s
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._dead = 0
        self._clock = clock
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def dead_share(self) -> float:
        return self._dead / len(self._outcomes) if self._outcomes else 0.0

    def record(self, dead_lettered: bool) -> bool:
        """Record one outcome (True = failed); return True when it trips the breaker."""
        if len(self._outcomes) == self.window and self._outcomes[0]:
            self._dead -= 1
        self._outcomes.append(dead_lettered)
        self._dead += dead_lettered
        if self.is_open or len(self._outcomes) < self.window:
            return False
        if self.dead_share > self.ratio:
            self.opened_at = self._clock()
            return True
        return False

    def record_many(self, failed: bool, count: int) -> None:
        """Record ``count`` equal outcomes at once; for successes, which never trip it."""
        if count <= 0:
            return
        # The oldest ``overflow`` outcomes fall out of the window; when that is all of
        # them (a fresh breaker meeting a large batch), the window holds only these.
        overflow = len(self._outcomes) + count - self.window
        if overflow >= len(self._outcomes):
            self._outcomes.clear()
            self._dead = 0
            count = min(count, self.window)
        elif overflow > 0:
            self._dead -= sum(self._outcomes[i] for i in range(overflow))
        self._outcomes.extend([failed] * count)
        self._dead += count if failed else 0
        full = len(self._outcomes) == self.window
        if failed and not self.is_open and full and self.dead_share > self.ratio:
            self.opened_at = self._clock()

    def ready_to_close(self) -> bool:
        """True once the cooldown has passed; the caller then resumes and calls ``reset``."""
        return self.opened_at is not None and self._clock() - self.opened_at >= self.cooldown_s

    def reset(self) -> None:
        self._outcomes.clear()
        self._dead = 0
        self.opened_at = None


class FloodGuard:
    """The breaker as the consumer uses it: fed with main-topic outcomes only.

    A main-topic record counts as failed when it did not succeed on its first read
    (dead-lettered, or sent to a retry topic). Retry-topic records are left out:
    after a restart their backlog fails in a burst by design. Successes are
    counted in bulk (they never trip the breaker) and handed over before each
    failure and at the end of a batch, so the window keeps their order.
    """

    def __init__(self, breaker: FloodBreaker, metrics: ConsumerMetrics) -> None:
        self.breaker = breaker
        self.metrics = metrics
        self._ok = 0

    @property
    def is_open(self) -> bool:
        return self.breaker.is_open

    def ok(self, count: int) -> None:
        """``count`` main-topic records succeeded on their first read."""
        self._ok += count

    def failed(self) -> bool:
        """One main-topic record failed; True when this trips the breaker."""
        self.flush()
        if not self.breaker.record(True):
            return False
        self.metrics.flood_trips.inc()
        self.metrics.flood_open.set(1)
        log.critical(
            "flood breaker tripped: %.0f%% of the last %d orders failed; "
            "pausing consumption for %.0fs",
            self.breaker.dead_share * 100,
            self.breaker.window,
            self.breaker.cooldown_s,
        )
        return True

    def flush(self) -> None:
        """Hand the successes counted so far to the breaker."""
        if self._ok:
            self.breaker.record_many(False, self._ok)
            self._ok = 0

    def may_consume(self) -> bool:
        """False while the breaker is open and cooling down; closes it when the time is up."""
        if not self.breaker.is_open:
            return True
        if not self.breaker.ready_to_close():
            return False
        log.warning("flood breaker cooldown over; resuming consumption")
        self.breaker.reset()
        self.metrics.flood_open.set(0)
        return True
