"""The DLQ report on a known input (SQLite): every number checked exactly.

The input (``seed_known_input``) and its expected numbers are shared with the
PostgreSQL test and the DAG test, which import them from here.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from orderproc.errors import ConfigError
from orderproc.report import (
    DlqReport,
    PriceStats,
    ReplayStats,
    build_report,
    csv_rows,
    fmt_age,
    format_table,
    parse_since,
    to_markdown,
    write_report,
)
from orderproc.store.engine import make_engine
from orderproc.store.tables import DlqEvent, ProcessedOrder

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=25)
HIGH = "Simulated error: high price"
DECODE = "cannot decode Avro value"


def _h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# order_id, product, price, processed_at, replay_id
PROCESSED = [
    ("o-1", "widget", 10.0, _h(1), None),
    ("o-2", "widget", 20.0, _h(2), None),
    ("o-3", "gadget", 30.0, _h(3), None),
    ("o-4", "gadget", 70.0, _h(4), "replay-1"),  # the replayed o-4, price corrected 150 -> 70
    ("o-9", "widget", 90.0, _h(5.5), "replay-8"),  # o-9 got through on its second replay
]

# order_id, product, price, reason, category, status, dead_lettered_at, replayed_at;
# the n-th row (from 1), if replayed, was replayed by the run "replay-<n>".
DEAD_LETTERED = [
    ("o-4", "gadget", 150.0, HIGH, "business_rule", "replayed", _h(0.5), _h(1)),
    ("o-5", "widget", 200.0, HIGH, "business_rule", "replayed", _h(1.5), _h(5)),
    ("o-6", "widget", 120.0, HIGH, "business_rule", "new", _h(1), None),
    ("o-7", "gadget", 300.0, HIGH, "business_rule", "approved", _h(2), None),
    (None, None, None, DECODE, "deserialization", "rejected", None, None),  # drained at +6h
    ("o-8", "widget", 180.0, HIGH, "business_rule", "parked", _h(0), None),
    ("o-9", "widget", 225.0, HIGH, "business_rule", "replayed", _h(2.5), _h(3)),
    # The copy of replay-7 failed again and came back; replay-8 (corrected price) got through.
    ("o-9", "widget", 225.0, HIGH, "business_rule", "replayed", _h(3.2), _h(5.2)),
]


def seed_known_input(engine: Engine) -> None:
    """Insert ``PROCESSED`` and ``DEAD_LETTERED`` into a migrated, empty store."""
    processed = [
        {"order_id": oid, "product": product, "price": price, "attempts": 1,
         "source_topic": "orders", "source_partition": 0, "source_offset": offset,
         "processed_at": at, "replay_id": replay_id}
        for offset, (oid, product, price, at, replay_id) in enumerate(PROCESSED)
    ]  # fmt: skip
    dead = [_dlq_row(offset, *row) for offset, row in enumerate(DEAD_LETTERED)]
    with engine.begin() as conn:
        conn.execute(insert(ProcessedOrder), processed)
        conn.execute(insert(DlqEvent), dead)


def _dlq_row(offset: int, *values: Any) -> dict[str, Any]:
    order_id, product, price, reason, category, status, failed_at, replayed_at = values
    return {
        "dlq_topic": "orders_dlq", "dlq_partition": 0, "dlq_offset": offset,
        "order_id": order_id, "product": product, "price": price, "reason": reason,
        "category": category, "retryable": False, "attempts": 3, "status": status,
        "dead_lettered_at": failed_at, "drained_at": failed_at or _h(6),
        "replayed_at": replayed_at, "replay_count": 1 if replayed_at else 0,
        "replay_id": f"replay-{offset + 1}" if replayed_at else None,
    }  # fmt: skip


def assert_known_report(report: DlqReport) -> None:
    """The all-time report of the known input, as of ``NOW``."""
    assert dict(report.inflow_by_reason) == {HIGH: 7, DECODE: 1}
    assert dict(report.inflow_by_category) == {"business_rule": 7, "deserialization": 1}
    assert dict(report.inflow_by_product) == {"widget": 5, "gadget": 2, "(unknown)": 1}
    assert report.dlq_total == 8
    assert (report.failed_prices.count, report.failed_prices.min) == (7, 120.0)
    assert (report.failed_prices.max, report.failed_prices.mean) == (300.0, 200.0)
    assert report.failed_prices.median == 200.0
    assert (report.processed_prices.count, report.processed_prices.min) == (5, 10.0)
    assert (report.processed_prices.max, report.processed_prices.mean) == (90.0, 44.0)
    assert report.processed_prices.median == 30.0
    assert report.running_average == 44.0
    assert dict(report.running_average_by_product) == {"gadget": 50.0, "widget": 40.0}
    assert [avg for _, avg in report.running_average_curve] == [10.0, 15.0, 20.0, 32.5, 44.0]
    assert report.running_average_curve[-1][0] == _h(5.5)
    assert dict(report.backlog) == {
        "new": 1, "approved": 1, "rejected": 1, "replayed": 4, "parked": 1
    }  # fmt: skip
    assert report.oldest_unresolved_at == _h(1)  # o-6 (new); o-8 is parked, o-4 replayed
    assert report.oldest_unresolved_age == timedelta(hours=24)
    # o-4 and o-9's second replay succeeded; o-9's first copy failed again, o-5 is pending.
    assert (report.replay.replayed, report.replay.succeeded) == (4, 2)
    assert report.replay.success_rate == 0.5


@pytest.fixture
def engine(sqlite_url: str) -> Any:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def test_all_time_report_of_known_input(engine: Engine) -> None:
    seed_known_input(engine)
    assert_known_report(build_report(engine, now=NOW))


def test_since_limits_inflow_prices_and_replays_but_not_the_backlog(engine: Engine) -> None:
    seed_known_input(engine)
    report = build_report(engine, now=NOW, since=_h(1.5))
    assert dict(report.inflow_by_reason) == {HIGH: 4, DECODE: 1}  # o-5, o-7, o-9 twice
    assert dict(report.inflow_by_product) == {"widget": 3, "(unknown)": 1, "gadget": 1}
    assert (report.failed_prices.count, report.failed_prices.mean) == (4, 237.5)
    assert report.failed_prices.median == 225.0
    assert (report.processed_prices.count, report.processed_prices.mean) == (4, 52.5)
    assert report.processed_prices.median == 50.0
    assert dict(report.running_average_by_product) == {"gadget": 50.0, "widget": 55.0}
    assert (report.replay.replayed, report.replay.succeeded) == (3, 1)  # o-4 replayed before
    assert sum(report.backlog.values()) == 8
    assert report.oldest_unresolved_at == _h(1)


def test_empty_store_reports_zeros_and_no_rates(engine: Engine) -> None:
    report = build_report(engine, now=NOW)
    assert report.dlq_total == 0
    assert report.failed_prices.count == 0 and report.failed_prices.mean is None
    assert report.running_average is None and report.running_average_curve == []
    assert set(report.backlog.values()) == {0}
    assert report.oldest_unresolved_age is None
    assert report.replay.success_rate is None
    assert "replay success rate          n/a" in format_table(report)


def test_naive_now_and_since_are_taken_as_utc(engine: Engine) -> None:
    seed_known_input(engine)
    report = build_report(engine, now=NOW.replace(tzinfo=None), since=T0.replace(tzinfo=None))
    assert report.generated_at == NOW
    assert report.dlq_total == 8


def test_table_shows_the_numbers_an_operator_looks_for(engine: Engine) -> None:
    seed_known_input(engine)
    table = format_table(build_report(engine, now=NOW))
    assert "replay success rate          50.0%" in table
    assert "oldest unresolved age        1d 0h 0m" in table
    assert "failed     7      120.00  300.00  200.00  200.00" in table
    assert f"{HIGH}  7" in table


def test_markdown_has_tables_and_embeds_the_chart(engine: Engine) -> None:
    seed_known_input(engine)
    markdown = to_markdown(build_report(engine, now=NOW), "chart.png")
    assert "![DLQ report chart](chart.png)" in markdown
    assert "| processed | 5 | 10.00 | 90.00 | 44.00 | 30.00 |" in markdown
    assert "| replay success rate | 50.0% |" in markdown


def test_markdown_escapes_pipes_in_reasons() -> None:
    report = DlqReport(
        generated_at=NOW, since=None, inflow_by_reason={"a|b": 1}, inflow_by_category={},
        inflow_by_product={}, failed_prices=PriceStats(0), processed_prices=PriceStats(0),
        running_average_by_product={}, running_average_curve=[], backlog={"new": 0,
        "approved": 0}, oldest_unresolved_at=None, replay=ReplayStats(0, 0),
    )  # fmt: skip
    assert "| a\\|b | 1 |" in to_markdown(report, "chart.png")


def test_csv_rows_carry_unrounded_values(engine: Engine) -> None:
    seed_known_input(engine)
    rows = {(s, k, m): v for s, k, m, v in csv_rows(build_report(engine, now=NOW))}
    assert rows["prices", "failed", "mean"] == 200.0
    assert rows["inflow_by_category", "deserialization", "count"] == 1
    assert rows["backlog", "oldest_unresolved", "age_seconds"] == 86400.0
    assert rows["replay", "(all)", "success_rate"] == 0.5


def read_csv(path: Path) -> dict[tuple[str, str, str], str]:
    """A written report CSV keyed by ``(section, key, metric)``."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {(r["section"], r["key"], r["metric"]): r["value"] for r in csv.DictReader(fh)}


def test_write_report_creates_markdown_csv_and_png(engine: Engine, tmp_path: Path) -> None:
    seed_known_input(engine)
    files = write_report(build_report(engine, now=NOW), tmp_path)
    assert files.folder == tmp_path / "dlq-report-20260302T090000Z"
    assert files.chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "| widget | 5 |" in files.markdown.read_text(encoding="utf-8")
    values = read_csv(files.csv)
    assert values["replay", "(all)", "success_rate"] == "0.5"
    assert values["prices", "processed", "median"] == "30.0"
    assert values["prices", "failed", "count"] == "7"


def test_write_report_of_an_empty_store_still_draws_a_chart(engine: Engine, tmp_path: Path) -> None:
    files = write_report(build_report(engine, now=NOW), tmp_path)
    assert files.chart.stat().st_size > 0
    assert read_csv(files.csv)["replay", "(all)", "success_rate"] == ""


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
        ("2026-03-01", T0 - timedelta(hours=8)),  # a date is midnight UTC
    ],
)
def test_parse_since(text: str | None, expected: datetime | None) -> None:
    assert parse_since(text) == expected


def test_parse_since_rejects_text_that_is_not_a_date() -> None:
    with pytest.raises(ConfigError, match="since: expected an ISO 8601 date-time"):
        parse_since("yesterday")


def test_cli_writes_the_files_and_prints_the_table(
    engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from orderproc.cli.report import app

    seed_known_input(engine)
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, ["--database-url", sqlite_url, "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "replay success rate          50.0%" in result.output
    (markdown,) = out.glob("dlq-report-*/report.md")
    assert f"report: {markdown}" in result.output


def test_cli_on_a_store_without_tables_fails_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orderproc.cli.report import app
    from orderproc.store.repository import StoreError

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(app, ["--database-url", url, "--out", str(tmp_path / "r")])

    assert isinstance(result.exception, StoreError)
    assert "orderproc db upgrade" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "r").exists()
