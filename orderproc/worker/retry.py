"""Retry policy: how many attempts, and how long to wait between them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from orderproc.config import Settings
from orderproc.errors import ErrorCategory, ProcessingError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap.

    ``delay(n)`` is the wait after the n-th failed attempt:
    ``min(cap, initial * multiplier**(n-1))``, spread by ``+-jitter`` of itself so
    many failing consumers do not retry in lock step.
    """

    max_attempts: int = 3
    initial_s: float = 1.0
    multiplier: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_s < 0 or self.max_s < 0 or self.multiplier < 1:
            raise ValueError("backoff must be non-negative and non-shrinking")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            initial_s=settings.backoff_initial_s,
            multiplier=settings.backoff_multiplier,
            max_s=settings.backoff_max_s,
            jitter=settings.backoff_jitter,
        )

    def base_delay(self, failed_attempt: int) -> float:
        """The delay after attempt ``failed_attempt`` (1-based) before jitter."""
        if failed_attempt < 1:
            raise ValueError("attempts are counted from 1")
        exponent = min(failed_attempt - 1, 64)
        try:
            grown = self.initial_s * self.multiplier**exponent
        except OverflowError:  # a huge multiplier: far past any cap
            grown = math.inf if self.initial_s else 0.0
        return float(min(self.max_s, grown))

    def delay(self, failed_attempt: int) -> float:
        base = self.base_delay(failed_attempt)
        if not self.jitter:
            return base
        spread = base * self.jitter
        return max(0.0, min(self.max_s, base + self.rng.uniform(-spread, spread)))

    def longest_delay(self) -> float:
        """The longest wait ``delay`` can give: before the last attempt, jitter included."""
        if self.max_attempts < 2:
            return 0.0
        base = self.base_delay(self.max_attempts - 1)
        return min(self.max_s, base * (1 + self.jitter))

    def should_retry(self, error: ProcessingError, attempts_made: int) -> bool:
        """Whether a record that failed ``attempts_made`` times gets another attempt."""
        return error.retryable and attempts_made < self.max_attempts


def classify(exc: BaseException) -> ProcessingError:
    """Turn any handler exception into a ``ProcessingError``.

    Our own errors keep their class; anything else a handler raises is treated as
    transient (retryable), because an unexpected exception is more often a
    flaky dependency than a poisoned record. Handlers that know better raise
    ``PermanentError``.
    """
    if isinstance(exc, ProcessingError):
        return exc
    wrapped = ProcessingError(
        f"{type(exc).__name__}: {exc}", category=ErrorCategory.TRANSIENT, retryable=True
    )
    wrapped.__cause__ = exc
    return wrapped
