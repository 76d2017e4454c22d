"""The visibility measurement's arithmetic: the figures ``make bench-visibility`` prints."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.visibility import CaseResult, latencies, percentile, table

pytestmark = pytest.mark.unit


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100

    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([], 50) is None


def test_latency_counts_only_orders_processed_within_the_window() -> None:
    produced_ms = {"a": 1_000, "b": 2_000, "c": 3_000}
    processed = {"a": 1.5, "b": 4.0, "c": 9.0, "stranger": 2.0}

    assert latencies(produced_ms, processed, end=5.0) == [0.5, 2.0]


def test_the_table_shows_visible_shares_and_p99_against_the_clean_run(
    table_rows: Callable[[str], list[list[str]]],
) -> None:
    clean = CaseResult("non-blocking", 0.0, 90.0, 1000, 1000, 990, 0.2, 0.5)
    failing = CaseResult("non-blocking", 0.10, 90.0, 1000, 900, 900, 0.1, 0.35)
    blocking = CaseResult("blocking", 0.36, 90.0, 1000, 640, 0, None, None)

    header, *rows = table_rows(table([clean, failing, blocking]))

    assert header[4] == "good visible in 90 s"
    assert rows[0] == ["non-blocking", "0%", "1,000", "1,000", "990 (99.0%)", "0.20 s",
                       "0.50 s", "1.00"]  # fmt: skip
    assert rows[1][4:] == ["900 (100.0%)", "0.10 s", "0.35 s", "0.70"]
    assert rows[2][4:] == ["0 (0.0%)", "-", "-", "-"]


def test_queue_mode_is_compared_with_its_own_clean_run(
    table_rows: Callable[[str], list[list[str]]],
) -> None:
    classic = CaseResult("non-blocking", 0.0, 90.0, 1000, 1000, 1000, 0.1, 0.5)
    queue_clean = CaseResult("queue", 0.0, 90.0, 1000, 1000, 1000, 0.1, 0.25, "share")
    queue_failing = CaseResult("queue", 0.10, 90.0, 1000, 900, 900, 0.1, 1.0, "share")

    _, *rows = table_rows(table([classic, queue_clean, queue_failing]))

    assert [row[-1] for row in rows] == ["1.00", "1.00", "4.00"]  # 1.0 / 0.25, not / 0.5
