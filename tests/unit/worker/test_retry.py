"""RetryPolicy: how many attempts a failing order gets and how long it waits between them."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderproc.config import Settings
from orderproc.errors import (
    BusinessRuleError,
    DeserializationError,
    PermanentError,
    ProcessingError,
    RetryableError,
    ValidationError,
)
from orderproc.worker.retry import RetryPolicy, classify

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_orderproc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() must see the defaults, not whatever the shell exported."""
    for name in list(os.environ):
        if name.startswith("ORDERPROC_"):
            monkeypatch.delenv(name)


def _policy(**overrides: object) -> RetryPolicy:
    values: dict[str, object] = {
        "max_attempts": 3,
        "initial_s": 1.0,
        "multiplier": 2.0,
        "max_s": 30.0,
        "jitter": 0.0,
    }
    values.update(overrides)
    return RetryPolicy(**values)  # type: ignore[arg-type]


# -- backoff ---------------------------------------------------------------------------


def test_base_delay_doubles_after_each_failed_attempt_until_the_cap() -> None:
    policy = _policy(initial_s=1.0, multiplier=2.0, max_s=30.0)

    delays = [policy.base_delay(n) for n in range(1, 8)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_base_delay_stays_at_the_cap_for_absurd_attempt_counts() -> None:
    policy = _policy(initial_s=1.0, multiplier=2.0, max_s=30.0)

    assert policy.base_delay(10_000) == 30.0


def test_zero_jitter_gives_exactly_the_base_delay() -> None:
    policy = _policy(initial_s=0.25, multiplier=3.0, max_s=60.0, jitter=0.0)

    assert [policy.delay(n) for n in range(1, 10)] == [policy.base_delay(n) for n in range(1, 10)]


def test_jitter_spreads_delays_within_plus_minus_its_share() -> None:
    policy = _policy(initial_s=1.0, multiplier=2.0, max_s=30.0, jitter=0.1, rng=random.Random(7))

    delays = [policy.delay(3) for _ in range(2_000)]  # base 4.0 s

    assert all(3.6 <= d <= 4.4 for d in delays)
    # Consumers must not retry in lock step: the spread is real, on both sides of the base.
    assert min(delays) < 3.7
    assert max(delays) > 4.3


def test_jitter_never_pushes_a_capped_delay_above_the_cap() -> None:
    policy = _policy(initial_s=10.0, multiplier=2.0, max_s=15.0, jitter=1.0, rng=random.Random(3))

    delays = [policy.delay(5) for _ in range(2_000)]

    assert all(0.0 <= d <= 15.0 for d in delays)


def test_same_seed_gives_the_same_delays() -> None:
    first = _policy(jitter=0.5, rng=random.Random(42))
    second = _policy(jitter=0.5, rng=random.Random(42))

    assert [first.delay(n) for n in range(1, 20)] == [second.delay(n) for n in range(1, 20)]


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        _policy().base_delay(0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_s": -1.0}, "non-negative"),
        ({"max_s": -0.1}, "non-negative"),
        ({"multiplier": 0.5}, "non-shrinking"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.01}, "jitter"),
    ],
)
def test_invalid_policy_is_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _policy(**overrides)


@given(
    initial_s=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    max_s=st.floats(0, 1_000),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 500),
    seed=st.integers(0, 2**32 - 1),
)
@settings(deadline=None)
def test_delay_is_always_between_zero_and_the_cap(
    initial_s: float, multiplier: float, max_s: float, jitter: float, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(
        max_attempts=3,
        initial_s=initial_s,
        multiplier=multiplier,
        max_s=max_s,
        jitter=jitter,
        rng=random.Random(seed),
    )

    assert 0.0 <= policy.delay(attempt) <= max_s


@given(
    max_attempts=st.integers(1, 12),
    initial_s=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
@settings(deadline=None)
def test_no_delay_before_any_attempt_exceeds_the_longest_delay(
    max_attempts: int, initial_s: float, multiplier: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, initial_s=initial_s, multiplier=multiplier,
                         jitter=jitter, rng=random.Random(seed))  # fmt: skip
    delays = [policy.delay(n) for n in range(1, max_attempts) for _ in range(20)]

    assert all(d <= policy.longest_delay() for d in delays)
    if max_attempts == 1:
        assert policy.longest_delay() == 0.0  # no retry, no wait
    else:  # reached: jitter at its top before the last attempt
        top = policy.base_delay(max_attempts - 1) * (1 + jitter)
        assert policy.longest_delay() == min(policy.max_s, top)


@given(
    initial_s=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    max_s=st.floats(0, 1_000),
    attempt=st.integers(1, 500),
)
@settings(deadline=None)
def test_base_delay_never_shrinks_as_attempts_grow(
    initial_s: float, multiplier: float, max_s: float, attempt: int
) -> None:
    policy = RetryPolicy(initial_s=initial_s, multiplier=multiplier, max_s=max_s, jitter=0.0)

    assert policy.base_delay(attempt) <= policy.base_delay(attempt + 1)


def test_huge_multiplier_is_capped_instead_of_overflowing() -> None:
    policy = _policy(initial_s=1.0, multiplier=1e200, max_s=30.0)

    assert policy.base_delay(3) == 30.0


# -- should_retry ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts_made", "expected"),
    [(1, True), (2, True), (3, False), (4, False)],
)
def test_retryable_error_is_retried_until_max_attempts(attempts_made: int, expected: bool) -> None:
    policy = _policy(max_attempts=3)

    assert policy.should_retry(RetryableError("flaky"), attempts_made) is expected


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("never"),
        ValidationError("price is negative: -1.0"),
        DeserializationError("undecodable", b"\x00"),
        ProcessingError("told not to", retryable=False),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_errors_are_never_retried(error: ProcessingError) -> None:
    assert _policy(max_attempts=10).should_retry(error, 1) is False


def test_high_price_business_error_is_retried_like_the_original_system() -> None:
    policy = _policy(max_attempts=3)

    assert policy.should_retry(BusinessRuleError("Simulated error: high price"), 1)
    assert not policy.should_retry(BusinessRuleError("Simulated error: high price"), 3)


def test_unexpected_handler_exception_is_retried() -> None:
    assert _policy(max_attempts=3).should_retry(classify(ConnectionError("reset")), 1)


def test_single_attempt_policy_never_retries() -> None:
    assert not _policy(max_attempts=1).should_retry(RetryableError("flaky"), 1)


def test_from_settings_takes_every_backoff_setting() -> None:
    settings_ = Settings(
        max_attempts=5,
        backoff_initial_s=0.5,
        backoff_multiplier=3.0,
        backoff_max_s=12.0,
        backoff_jitter=0.25,
    )

    policy = RetryPolicy.from_settings(settings_)

    assert (policy.max_attempts, policy.initial_s, policy.multiplier) == (5, 0.5, 3.0)
    assert (policy.max_s, policy.jitter) == (12.0, 0.25)


def test_from_default_settings_matches_the_documented_defaults() -> None:
    policy = RetryPolicy.from_settings(Settings())

    assert policy == RetryPolicy()
    assert policy.max_attempts == 3
