"""Time: UTC helpers shared by every wing, and the pacer that spaces producer and replay sends."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive values are taken as UTC (SQLite hands them back naive)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now_ms() -> int:
    """Milliseconds since the epoch (Kafka's timestamp unit)."""
    return int(time.time() * 1000)


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time with millisecond precision.

    The same text as ``datetime.isoformat(timespec="milliseconds")``. Each dead letter
    writes two of these, and a batch's are mostly in the same few seconds: the
    seconds' text is kept (a bounded cache), the milliseconds appended (1.3 to 0.3 us).
    """
    seconds, millis = divmod(epoch_ms, 1000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        prefix = datetime.fromtimestamp(seconds, tz=UTC).isoformat()[:-6]  # no "+00:00"
        _SECONDS[seconds] = prefix
    return f"{prefix}.{millis:03d}+00:00"


_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 4096


class Pacer:
    """Spaces calls ``1 / rate`` seconds apart, with no burst after a stall; rate 0 = no pacing.

    ``clock`` and ``sleep`` are injectable so tests check the schedule, not wall time.
    ``sleep`` may return early (a poll-based sleep) or return True to say "stop now"
    (``threading.Event.wait``), in which case ``wait`` returns False.
    """

    def __init__(
        self,
        rate_per_sec: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate_per_sec if rate_per_sec > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> bool:
        """Return when the next call may go: True, or False if ``sleep`` asked to stop."""
        if not self.interval:
            return True
        now = self._clock()
        due = now if self._next is None else self._next
        while now < due:
            if self._sleep(due - now) is True:
                return False
            now = self._clock()
        self._next = max(due, now) + self.interval
        return True
