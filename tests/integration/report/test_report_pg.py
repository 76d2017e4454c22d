"""The DLQ report on PostgreSQL: the same known input gives the same exact numbers.

PostgreSQL is where the window functions, the median query and the
timestamp-with-time-zone comparisons meet production; SQLite is covered by
``tests/unit/test_report.py``, which defines the input.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from orderproc.report import build_report, write_report
from tests.unit.test_report import NOW, T0, assert_known_report, read_csv, seed_known_input

pytestmark = pytest.mark.integration


def test_all_time_report_of_known_input(pg_engine: Engine) -> None:
    seed_known_input(pg_engine)
    assert_known_report(build_report(pg_engine, now=NOW))


def test_since_window_on_timestamptz(pg_engine: Engine) -> None:
    seed_known_input(pg_engine)
    report = build_report(pg_engine, now=NOW, since=T0 + timedelta(hours=1, minutes=30))
    assert report.dlq_total == 5
    assert (report.processed_prices.count, report.processed_prices.median) == (4, 50.0)
    assert (report.replay.replayed, report.replay.succeeded) == (3, 1)


def test_written_csv_matches_on_postgres(pg_engine: Engine, tmp_path: Path) -> None:
    seed_known_input(pg_engine)
    files = write_report(build_report(pg_engine, now=NOW), tmp_path)
    values = read_csv(files.csv)
    assert values["prices", "failed", "median"] == "200.0"
    assert values["running_average", "gadget", "average"] == "50.0"
    assert values["replay", "(all)", "success_rate"] == "0.5"
