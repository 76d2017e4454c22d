"""FloodBreaker: pause consumption when most records are being dead-lettered."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderproc.worker.breaker import FloodBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(
    window: int = 10, ratio: float = 0.8, cooldown_s: float = 60.0, clock: FakeClock | None = None
) -> FloodBreaker:
    return FloodBreaker(window, ratio, cooldown_s, clock=clock or FakeClock())


def _feed(breaker: FloodBreaker, outcomes: list[bool]) -> list[bool]:
    return [breaker.record(dead) for dead in outcomes]


def test_early_failures_never_trip_before_the_window_is_full() -> None:
    breaker = _breaker(window=10)

    trips = _feed(breaker, [True] * 9)

    assert not any(trips)
    assert not breaker.is_open
    assert breaker.dead_share == 1.0


def test_trips_on_the_outcome_that_pushes_the_share_above_the_ratio() -> None:
    clock = FakeClock(500.0)
    breaker = _breaker(window=10, ratio=0.8, clock=clock)

    trips = _feed(breaker, [False, False] + [True] * 8)  # exactly 0.8: not above
    assert not any(trips)
    assert not breaker.is_open

    assert breaker.record(True) is True  # window now 1 ok + 9 dead = 0.9
    assert breaker.is_open
    assert breaker.opened_at == 500.0


def test_trip_is_reported_once_while_open() -> None:
    breaker = _breaker(window=10)
    _feed(breaker, [True] * 10)

    assert breaker.is_open
    assert _feed(breaker, [True] * 20) == [False] * 20
    assert breaker.is_open


def test_share_exactly_at_the_ratio_does_not_trip() -> None:
    breaker = _breaker(window=10, ratio=0.5)

    _feed(breaker, [True, False] * 50)

    assert breaker.dead_share == 0.5
    assert not breaker.is_open


def test_sliding_window_forgets_old_outcomes() -> None:
    breaker = _breaker(window=10, ratio=0.8)
    _feed(breaker, [True] * 8 + [False] * 2)  # 0.8, full, not tripped

    _feed(breaker, [False] * 8)  # the eight old dead letters slide out

    assert breaker.dead_share == 0.0
    assert not breaker.is_open
    assert not breaker.record(True)  # 1 of 10: far from tripping


def test_old_successes_sliding_out_can_trip_it() -> None:
    breaker = _breaker(window=10, ratio=0.8)
    _feed(breaker, [False] * 10)

    trips = _feed(breaker, [True] * 9)

    assert trips == [False] * 8 + [True]  # trips when 9 of the last 10 are dead


def test_not_ready_to_close_before_the_cooldown_has_passed() -> None:
    clock = FakeClock()
    breaker = _breaker(window=10, cooldown_s=60.0, clock=clock)
    _feed(breaker, [True] * 10)

    clock.advance(59.9)

    assert not breaker.ready_to_close()


def test_ready_to_close_once_the_cooldown_has_passed() -> None:
    clock = FakeClock()
    breaker = _breaker(window=10, cooldown_s=60.0, clock=clock)
    _feed(breaker, [True] * 10)

    clock.advance(60.0)

    assert breaker.ready_to_close()


def test_closed_breaker_is_never_ready_to_close() -> None:
    clock = FakeClock()
    breaker = _breaker(clock=clock)
    clock.advance(1e6)

    assert not breaker.ready_to_close()


def test_reset_closes_it_and_starts_an_empty_half_open_window() -> None:
    breaker = _breaker(window=10)
    _feed(breaker, [True] * 10)

    breaker.reset()

    assert not breaker.is_open
    assert breaker.opened_at is None
    assert breaker.dead_share == 0.0
    # Half-open: needs a full window again before it can trip.
    assert _feed(breaker, [True] * 9) == [False] * 9
    assert breaker.record(True) is True


@pytest.mark.parametrize(
    ("window", "ratio"), [(0, 0.5), (-1, 0.5), (10, 0.0), (10, -0.1), (10, 1.01)]
)
def test_invalid_window_or_ratio_is_rejected(window: int, ratio: float) -> None:
    with pytest.raises(ValueError, match="window must be positive"):
        FloodBreaker(window, ratio, 60.0)


@given(seed=st.integers(0, 2**32 - 1))
@settings(deadline=None, max_examples=25)
def test_original_workload_of_36_percent_failures_never_trips(seed: int) -> None:
    rng = random.Random(seed)
    breaker = FloodBreaker(window=200, ratio=0.8, cooldown_s=300.0, clock=FakeClock())

    trips = [breaker.record(rng.random() < 0.36) for _ in range(10_000)]

    assert not any(trips)
    assert not breaker.is_open


@given(outcomes=st.lists(st.booleans(), max_size=300), window=st.integers(1, 50))
@settings(deadline=None)
def test_dead_share_is_the_share_of_the_last_window_outcomes(
    outcomes: list[bool], window: int
) -> None:
    breaker = FloodBreaker(window=window, ratio=1.0, cooldown_s=1.0, clock=FakeClock())

    _feed(breaker, outcomes)

    recent = outcomes[-window:]
    expected = sum(recent) / len(recent) if recent else 0.0
    assert breaker.dead_share == pytest.approx(expected)


@pytest.mark.parametrize("first_batch", [201, 300, 399, 1000])
def test_a_fresh_breaker_takes_a_first_batch_larger_than_its_window(first_batch: int) -> None:
    breaker = FloodBreaker(window=200, ratio=0.8, cooldown_s=1)
    breaker.record_many(False, 50)

    breaker.record_many(False, first_batch)  # more than the window and than what it holds

    assert not breaker.is_open
    assert breaker.dead_share == 0.0
    for _ in range(160):  # then 80 % failures trip it as usual
        breaker.record(True)
    assert breaker.record(True) or breaker.is_open
