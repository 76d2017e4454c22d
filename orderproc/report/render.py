"""The DLQ audit report rendered: aligned text for a terminal or task log, Markdown, CSV rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tabulate import tabulate

from orderproc.report.aggregate import UNRESOLVED, DlqReport

DEFINITIONS = """\
## Definitions

- *Window*: DLQ rows by failure time (dead-lettered, else drained), processed orders by
  processing time, replays by replay time. The review backlog is always the current state.
- *Unresolved*: status `new` or `approved`; its age counts from the failure time.
- *Running average*: mean of processed prices so far (the consumer's `avg=`).
- *Replay success rate*: replayed DLQ rows whose replayed copy was processed (a row of
  `processed_orders` with the same order id and replay id), divided by all replayed DLQ
  rows. A copy that failed again counts as a failed replay."""


@dataclass(frozen=True, slots=True)
class Section:
    """One table of the report, rendered as plain text and as Markdown."""

    title: str
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]


def fmt_number(value: float | None) -> str:
    """Two decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.2f}"


def fmt_age(age: timedelta | None) -> str:
    """A short age such as ``2d 3h 5m``, ``4m 10s`` or ``n/a``."""
    if age is None:
        return "n/a"
    seconds = int(age.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days or hours:
        return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def sections(report: DlqReport) -> list[Section]:
    """The report as titled tables, in display order."""
    rate = report.replay.success_rate
    summary = [
        ("window", "all time" if report.since is None else f"since {report.since.isoformat()}"),
        ("dlq records", str(report.dlq_total)),
        ("processed orders", str(report.processed_prices.count)),
        ("running average (processed)", fmt_number(report.running_average)),
        ("unresolved (new + approved)", str(sum(report.backlog[s] for s in UNRESOLVED))),
        ("oldest unresolved age", fmt_age(report.oldest_unresolved_age)),
        ("replayed rows", str(report.replay.replayed)),
        ("replayed copies processed", str(report.replay.succeeded)),
        ("replay success rate", "n/a" if rate is None else f"{rate:.1%}"),
    ]
    prices = [
        (name, str(s.count), *(fmt_number(v) for v in (s.min, s.max, s.mean, s.median)))
        for name, s in (("failed", report.failed_prices), ("processed", report.processed_prices))
    ]
    return [
        Section("Summary", ("metric", "value"), summary),
        _count_section("DLQ inflow by reason", "reason", report.inflow_by_reason),
        _count_section("DLQ inflow by category", "category", report.inflow_by_category),
        _count_section("DLQ inflow by schema", "schema", report.inflow_by_schema),
        _count_section("DLQ inflow by product", "product", report.inflow_by_product),
        Section(
            "Prices: failed vs processed",
            ("orders", "count", "min", "max", "mean", "median"),
            prices,
        ),
        Section(
            "Running average of processed prices by product",
            ("product", "average"),
            [(p, fmt_number(v)) for p, v in report.running_average_by_product.items()],
        ),
        _count_section("Review backlog", "status", report.backlog),
    ]


def _count_section(title: str, label: str, counts: Mapping[str, int]) -> Section:
    return Section(title, (label, "count"), [(k, str(n)) for k, n in counts.items()])


def format_table(report: DlqReport) -> str:
    """The report as aligned plain-text tables, for a terminal or a task log."""
    blocks = [f"DLQ report generated {report.generated_at.isoformat(timespec='seconds')}"]
    for section in sections(report):
        blocks.append(f"{section.title}\n{_table(section, 'simple')}")
    return "\n\n".join(blocks)


def to_markdown(report: DlqReport, chart_name: str) -> str:
    """The report as a Markdown document that embeds the chart ``chart_name``."""
    stamp = report.generated_at.isoformat(timespec="seconds")
    out = [f"# orderproc DLQ report\n\nGenerated {stamp}.\n\n![DLQ report chart]({chart_name})"]
    for section in sections(report):
        out.append(f"## {section.title}\n\n{_table(section, 'github')}")
    out.append(DEFINITIONS)
    return "\n\n".join(out) + "\n"


def _table(section: Section, fmt: str) -> str:
    rows = section.rows or [("(none)",) + ("",) * (len(section.headers) - 1)]
    if fmt == "github":  # a pipe inside a cell would end it early
        rows = [tuple(c.replace("|", "\\|").replace("\n", " ") for c in row) for row in rows]
    return str(tabulate(rows, headers=section.headers, tablefmt=fmt, disable_numparse=True))


def csv_rows(report: DlqReport) -> list[tuple[str, str, str, Any]]:
    """Tidy rows ``(section, key, metric, value)`` with unrounded values."""
    rows: list[tuple[str, str, str, Any]] = []
    for section, counts in (
        ("inflow_by_reason", report.inflow_by_reason),
        ("inflow_by_category", report.inflow_by_category),
        ("inflow_by_schema", report.inflow_by_schema),
        ("inflow_by_product", report.inflow_by_product),
        ("backlog", report.backlog),
    ):
        rows += [(section, key, "count", n) for key, n in counts.items()]
    for name, stats in (("failed", report.failed_prices), ("processed", report.processed_prices)):
        for metric in ("count", "min", "max", "mean", "median"):
            rows.append(("prices", name, metric, getattr(stats, metric)))
    rows.append(("running_average", "(all)", "average", report.running_average))
    rows += [
        ("running_average", p, "average", v) for p, v in report.running_average_by_product.items()
    ]
    age = report.oldest_unresolved_age
    rows.append(
        (
            "backlog",
            "oldest_unresolved",
            "age_seconds",
            None if age is None else age.total_seconds(),
        )
    )
    rows += [
        ("replay", "(all)", metric, value)
        for metric, value in (
            ("replayed", report.replay.replayed),
            ("succeeded", report.replay.succeeded),
            ("success_rate", report.replay.success_rate),
        )
    ]
    return rows
