"""Time helpers and the pacer's stop signal (its schedule is tested with the replay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderproc import clock
from orderproc.clock import Pacer, as_utc, iso_ms

pytestmark = pytest.mark.unit


def test_as_utc_takes_naive_times_as_utc_and_converts_aware_ones() -> None:
    assert as_utc(datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus_two = datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(plus_two) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert as_utc(plus_two).tzinfo is UTC


def test_iso_ms_keeps_milliseconds() -> None:
    assert iso_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123+00:00"


def _exact(epoch_ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds")


@given(st.integers(min_value=-(10**12), max_value=253_402_300_799_999))
def test_iso_ms_is_the_exact_time(epoch_ms: int) -> None:
    assert iso_ms(epoch_ms) == _exact(epoch_ms)


def test_iso_ms_keeps_a_bounded_number_of_seconds_and_stays_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clock, "_SECONDS", {})
    monkeypatch.setattr(clock, "_SECONDS_KEPT", 3)
    times = [1_700_000_000_000 + 1_000 * n + n for n in range(10)]  # ten different seconds

    first = [iso_ms(t) for t in times]
    kept = len(clock._SECONDS)
    again = [iso_ms(t + 500) for t in times]  # the same seconds, other milliseconds

    assert first == [_exact(t) for t in times]
    assert again == [_exact(t + 500) for t in times]
    assert kept <= 3 and len(clock._SECONDS) <= 3  # emptied when full, never past the bound


def test_a_sleep_that_says_stop_ends_the_wait() -> None:
    now = [0.0]
    pacer = Pacer(1.0, clock=lambda: now[0], sleep=lambda _s: True)

    assert pacer.wait() is True  # the first call goes at once
    assert pacer.wait() is False  # the second must wait, and the sleep asked to stop
