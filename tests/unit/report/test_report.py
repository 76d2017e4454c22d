"""The DLQ report on a known input (SQLite): every number checked exactly.

The input and its expected numbers are the ``known_input`` fixture (``tests/conftest.py``),
shared with the PostgreSQL test and the DAG test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from orderproc.errors import ConfigError, StoreError
from orderproc.report import parse_since, write_report
from orderproc.report.aggregate import DlqReport, PriceStats, ReplayStats, build_report
from orderproc.report.chart import chart_figure
from orderproc.report.render import csv_rows, fmt_age, format_table, to_markdown
from orderproc.store.engine import make_engine

pytestmark = pytest.mark.unit

Rows = Callable[[str], list[list[str]]]
CsvReader = Callable[[Path], dict[tuple[str, str, str], str]]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def test_all_time_report_of_known_input(engine: Engine, known_input: Any) -> None:
    known_input.seed(engine)
    known_input.check(build_report(engine, now=known_input.now))


def test_since_limits_inflow_prices_and_replays_but_not_the_backlog(
    engine: Engine, known_input: Any
) -> None:
    known_input.seed(engine)
    report = build_report(engine, now=known_input.now, since=known_input.at(1.5))
    # o-5, o-7, o-9 twice
    assert dict(report.inflow_by_reason) == {known_input.high: 4, known_input.decode: 1}
    assert dict(report.inflow_by_product) == {"widget": 3, "(unknown)": 1, "gadget": 1}
    assert (report.failed_prices.count, report.failed_prices.mean) == (4, 237.5)
    assert report.failed_prices.median == 225.0
    assert (report.processed_prices.count, report.processed_prices.mean) == (4, 52.5)
    assert report.processed_prices.median == 50.0
    assert dict(report.running_average_by_product) == {"gadget": 50.0, "widget": 55.0}
    assert (report.replay.replayed, report.replay.succeeded) == (3, 1)  # o-4 replayed before
    assert sum(report.backlog.values()) == 8
    assert report.oldest_unresolved_at == known_input.at(1)


def test_empty_store_reports_zeros_and_no_rates(
    engine: Engine, known_input: Any, table_rows: Rows
) -> None:
    report = build_report(engine, now=known_input.now)
    assert report.dlq_total == 0
    assert report.failed_prices.count == 0 and report.failed_prices.mean is None
    assert report.running_average is None and report.running_average_curve == []
    assert set(report.backlog.values()) == {0}
    assert report.oldest_unresolved_age is None
    assert report.replay.success_rate is None
    assert ["replay success rate", "n/a"] in table_rows(format_table(report))


def test_naive_now_and_since_are_taken_as_utc(engine: Engine, known_input: Any) -> None:
    known_input.seed(engine)
    naive_now, naive_t0 = known_input.now.replace(tzinfo=None), known_input.t0.replace(tzinfo=None)
    report = build_report(engine, now=naive_now, since=naive_t0)
    assert report.generated_at == known_input.now
    assert report.dlq_total == 8


def test_table_shows_the_numbers_an_operator_looks_for(
    engine: Engine, known_input: Any, table_rows: Rows
) -> None:
    known_input.seed(engine)
    table = format_table(build_report(engine, now=known_input.now))
    rows = table_rows(table)
    assert ["replay success rate", "50.0%"] in rows
    assert ["oldest unresolved age", "1d 0h 0m"] in rows
    assert ["orders", "count", "min", "max", "mean", "median"] in rows
    assert ["failed", "7", "120.00", "300.00", "200.00", "200.00"] in rows
    assert [known_input.high, "7"] in rows
    assert table.startswith("DLQ report generated 2026-03-02T09:00:00+00:00")


def test_markdown_has_tables_and_embeds_the_chart(
    engine: Engine, known_input: Any, table_rows: Rows
) -> None:
    known_input.seed(engine)
    markdown = to_markdown(build_report(engine, now=known_input.now), "chart.png")
    assert "![DLQ report chart](chart.png)" in markdown
    assert "\n## Prices: failed vs processed\n" in markdown
    rows = table_rows(markdown)
    assert ["processed", "5", "10.00", "90.00", "44.00", "30.00"] in rows
    assert ["replay success rate", "50.0%"] in rows


def test_markdown_escapes_pipes_in_reasons(known_input: Any, table_rows: Rows) -> None:
    report = DlqReport(
        generated_at=known_input.now, since=None, inflow_by_reason={"a|b": 1},
        inflow_by_category={}, inflow_by_product={}, failed_prices=PriceStats(0),
        processed_prices=PriceStats(0), running_average_by_product={},
        running_average_curve=[], backlog={"new": 0, "approved": 0},
        oldest_unresolved_at=None, replay=ReplayStats(0, 0),
    )  # fmt: skip
    markdown = to_markdown(report, "chart.png")
    assert "a\\|b" in markdown  # a bare pipe would end the cell early
    assert ["a|b", "1"] in table_rows(markdown)


def test_csv_rows_carry_unrounded_values(engine: Engine, known_input: Any) -> None:
    known_input.seed(engine)
    rows = {(s, k, m): v for s, k, m, v in csv_rows(build_report(engine, now=known_input.now))}
    assert rows["prices", "failed", "mean"] == 200.0
    assert rows["inflow_by_category", "deserialization", "count"] == 1
    assert rows["backlog", "oldest_unresolved", "age_seconds"] == 86400.0
    assert rows["replay", "(all)", "success_rate"] == 0.5


def test_write_report_creates_markdown_csv_and_png(
    engine: Engine,
    known_input: Any,
    read_report_csv: CsvReader,
    table_rows: Rows,
    tmp_path: Path,
) -> None:
    known_input.seed(engine)
    files = write_report(build_report(engine, now=known_input.now), tmp_path)
    assert files.folder == tmp_path / "dlq-report-20260302T090000Z"
    assert files.chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert ["widget", "5"] in table_rows(files.markdown.read_text(encoding="utf-8"))
    values = read_report_csv(files.csv)
    assert values["replay", "(all)", "success_rate"] == "0.5"
    assert values["prices", "processed", "median"] == "30.0"
    assert values["prices", "failed", "count"] == "7"


def test_write_report_of_an_empty_store_still_draws_a_chart(
    engine: Engine, known_input: Any, read_report_csv: CsvReader, tmp_path: Path
) -> None:
    files = write_report(build_report(engine, now=known_input.now), tmp_path)
    assert files.chart.stat().st_size > 0
    assert read_report_csv(files.csv)["replay", "(all)", "success_rate"] == ""


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (None, "n/a"),
        (timedelta(seconds=42), "0m 42s"),
        (timedelta(hours=3, minutes=7), "3h 7m"),
        (timedelta(days=2, hours=1, minutes=5, seconds=9), "2d 1h 5m"),
    ],
)
def test_fmt_age(age: timedelta | None, text: str) -> None:
    assert fmt_age(age) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("  ", None),
        ("2026-03-01T09:30:00+02:00", datetime(2026, 3, 1, 7, 30, tzinfo=UTC)),
        ("2026-03-01T09:30:00Z", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),  # a date is midnight UTC
    ],
)
def test_parse_since(text: str | None, expected: datetime | None) -> None:
    assert parse_since(text) == expected


def test_parse_since_rejects_text_that_is_not_a_date() -> None:
    with pytest.raises(ConfigError, match="since: expected an ISO 8601 date-time"):
        parse_since("yesterday")


def test_cli_writes_the_files_and_prints_the_table(
    engine: Engine, known_input: Any, table_rows: Rows, sqlite_url: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from orderproc.cli.report import app

    known_input.seed(engine)
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, ["--database-url", sqlite_url, "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert ["replay success rate", "50.0%"] in table_rows(result.output)
    (markdown,) = out.glob("dlq-report-*/report.md")
    assert f"report: {markdown}" in result.output


def test_cli_on_a_store_without_tables_fails_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orderproc.cli.report import app

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(app, ["--database-url", url, "--out", str(tmp_path / "r")])

    assert isinstance(result.exception, StoreError)
    assert "orderproc db upgrade" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("minutes_apart", [0.2, 7, 60, 600])
def test_the_curves_time_labels_overlap_neither_each_other_nor_the_axis_label(
    minutes_apart: float,
) -> None:
    # The x-axis label once sat on the dates (the formatter's offset text under the ticks).
    t0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
    curve = [(t0 + timedelta(minutes=minutes_apart * i), 50.0 + i % 7) for i in range(300)]
    report = DlqReport(
        generated_at=curve[-1][0], since=None, inflow_by_reason={}, inflow_by_category={},
        inflow_by_product={}, failed_prices=PriceStats(0), processed_prices=PriceStats(0),
        running_average_by_product={}, running_average_curve=curve, backlog={},
        oldest_unresolved_at=None, replay=ReplayStats(0, 0),
    )  # fmt: skip
    fig = chart_figure(report)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[5]
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    label = ax.xaxis.label.get_window_extent(renderer)

    assert len(boxes) >= 2
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert not any(box.overlaps(label) for box in boxes)
    assert not ax.xaxis.get_offset_text().get_text()
    assert ax.get_xlabel().startswith("processed at (UTC), 2026-03-01")
