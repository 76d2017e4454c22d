"""The DLQ report on PostgreSQL: the same known input gives the same exact numbers.

PostgreSQL is where the window functions, the median query and the
timestamp-with-time-zone comparisons meet production; SQLite is covered by
``tests/unit/report/test_report.py``. The input is the ``known_input`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from orderproc.report import write_report
from orderproc.report.aggregate import build_report

pytestmark = pytest.mark.integration


def test_all_time_report_of_known_input(pg_engine: Engine, known_input: Any) -> None:
    known_input.seed(pg_engine)
    known_input.check(build_report(pg_engine, now=known_input.now))


def test_since_window_on_timestamptz(pg_engine: Engine, known_input: Any) -> None:
    known_input.seed(pg_engine)
    since = known_input.t0 + timedelta(hours=1, minutes=30)
    report = build_report(pg_engine, now=known_input.now, since=since)
    assert report.dlq_total == 5
    assert (report.processed_prices.count, report.processed_prices.median) == (4, 50.0)
    assert (report.replay.replayed, report.replay.succeeded) == (3, 1)


def test_written_csv_matches_on_postgres(
    pg_engine: Engine,
    known_input: Any,
    read_report_csv: Callable[[Path], dict[tuple[str, str, str], str]],
    tmp_path: Path,
) -> None:
    known_input.seed(pg_engine)
    files = write_report(build_report(pg_engine, now=known_input.now), tmp_path)
    values = read_report_csv(files.csv)
    assert values["prices", "failed", "median"] == "200.0"
    assert values["running_average", "gadget", "average"] == "50.0"
    assert values["replay", "(all)", "success_rate"] == "0.5"
