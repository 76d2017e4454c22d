"""The DLQ audit report: pure aggregation over the store, then Markdown, CSV and a PNG chart.

Definitions (``since`` is an optional lower bound, default all time):

* **DLQ inflow** counts ``dlq_events`` rows whose failure time (``dead_lettered_at``,
  or ``drained_at`` when the envelope had none) is at or after ``since``, grouped by
  reason, by category and by product (``(unknown)`` when the record had no product).
* **Price statistics** compare ``dlq_events`` rows with a price (same window) with
  ``processed_orders`` rows whose ``processed_at`` is in the window.
* **Running average** is the consumer's ``avg=``: the mean of processed prices so far,
  overall and per product; the chart also draws how it evolved over ``processed_at``.
* **Review backlog** is the current state, never windowed: rows per status, and the
  failure time of the oldest unresolved row (status ``new`` or ``approved``).
* **Replay success rate** = succeeded / replayed, per replay. *Replayed* rows are
  ``dlq_events`` with ``replayed_at`` set (replayed in the window), whatever their
  status now; each row is replayed at most once (a copy that fails again comes back as
  a new row). A replayed row *succeeded* when ``processed_orders`` holds its order
  with the same ``replay_id``: the consumer processed the very copy this replay
  published (the lineage header ``replay.id``). An order that got through only on a
  later replay counts for that later row, not for this one. No replayed rows: the
  rate is ``None`` (``n/a``). Blind spot: if a replay run dies after publishing and
  a later run publishes the row again, the row keeps the later run's id while
  ``processed_orders`` keeps the first copy's, so that replay counts as failed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, case, exists, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from orderproc.config import Settings
from orderproc.errors import ConfigError
from orderproc.store.engine import make_engine
from orderproc.store.repository import store_error
from orderproc.store.tables import DlqEvent, DlqStatus, ProcessedOrder

UNKNOWN_PRODUCT = "(unknown)"
UNRESOLVED = (DlqStatus.NEW.value, DlqStatus.APPROVED.value)
DEFINITIONS = """\
## Definitions

- *Window*: DLQ rows by failure time (dead-lettered, else drained), processed orders by
  processing time, replays by replay time. The review backlog is always the current state.
- *Unresolved*: status `new` or `approved`; its age counts from the failure time.
- *Running average*: mean of processed prices so far (the consumer's `avg=`).
- *Replay success rate*: replayed DLQ rows whose replayed copy was processed (a row of
  `processed_orders` with the same order id and replay id), divided by all replayed DLQ
  rows. A copy that failed again counts as a failed replay."""

CURVE_POINTS = 500
"""The running-average curve keeps at most this many points, whatever the table size."""


@dataclass(frozen=True, slots=True)
class PriceStats:
    """Count, min, max, mean and median of a set of prices (None when empty)."""

    count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    median: float | None = None


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """Replayed DLQ rows, and how many of the copies they published were processed."""

    replayed: int
    succeeded: int

    @property
    def success_rate(self) -> float | None:
        """``succeeded / replayed``, or None when nothing was replayed."""
        return self.succeeded / self.replayed if self.replayed else None


@dataclass(frozen=True, slots=True)
class DlqReport:
    """Everything the report shows, computed by ``build_report``."""

    generated_at: datetime
    since: datetime | None
    inflow_by_reason: Mapping[str, int]
    inflow_by_category: Mapping[str, int]
    inflow_by_product: Mapping[str, int]
    failed_prices: PriceStats
    processed_prices: PriceStats
    running_average_by_product: Mapping[str, float]
    running_average_curve: Sequence[tuple[datetime, float]]
    backlog: Mapping[str, int]
    oldest_unresolved_at: datetime | None
    replay: ReplayStats

    @property
    def dlq_total(self) -> int:
        """DLQ rows in the window."""
        return sum(self.inflow_by_category.values())

    @property
    def running_average(self) -> float | None:
        """The overall running average of processed prices (their mean)."""
        return self.processed_prices.mean

    @property
    def oldest_unresolved_age(self) -> timedelta | None:
        """How long the oldest unresolved row has waited, as of ``generated_at``."""
        if self.oldest_unresolved_at is None:
            return None
        return max(self.generated_at - self.oldest_unresolved_at, timedelta(0))


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where ``write_report`` put one report."""

    folder: Path
    markdown: Path
    csv: Path
    chart: Path

    def as_dict(self) -> dict[str, str]:
        """The paths as strings (an XCom-friendly return value)."""
        return {
            "folder": str(self.folder),
            "markdown": str(self.markdown),
            "csv": str(self.csv),
            "chart": str(self.chart),
        }


def parse_since(text: str | None) -> datetime | None:
    """An ISO 8601 date or date-time (UTC when no offset is given); empty means all time.

    Raises:
        ConfigError: the text is not an ISO 8601 date or date-time.
    """
    if not text or not text.strip():
        return None
    try:
        return _utc(datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise ConfigError(f"since: expected an ISO 8601 date-time, got {text!r}") from exc


def default_reports_dir(settings: Settings) -> Path:
    """Where reports go: the ``reports_dir`` setting (``ORDERPROC_REPORTS_DIR``)."""
    return settings.reports_dir


# -- Aggregation ---------------------------------------------------------------------


def build_report(
    engine: Engine, *, now: datetime | None = None, since: datetime | None = None
) -> DlqReport:
    """Aggregate the store into a ``DlqReport`` (read-only; one connection).

    Args:
        engine: Engine of the orderproc store (PostgreSQL or SQLite).
        now: The report's time (ages are measured to it); default: the current time.
        since: Only count DLQ rows, processed orders and replays from then on.
    """
    since = _utc(since) if since is not None else None
    failed_at = func.coalesce(DlqEvent.dead_lettered_at, DlqEvent.drained_at)
    dlq_window = [] if since is None else [failed_at >= since]
    done_window = [] if since is None else [ProcessedOrder.processed_at >= since]
    product = func.coalesce(DlqEvent.product, UNKNOWN_PRODUCT)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every query, so the numbers agree while the drain writes.
            conn.execution_options(isolation_level="REPEATABLE READ")
        return DlqReport(
            generated_at=_utc(now or datetime.now(UTC)),
            since=since,
            inflow_by_reason=_counts(conn, DlqEvent.reason, dlq_window),
            inflow_by_category=_counts(conn, DlqEvent.category, dlq_window),
            inflow_by_product=_counts(conn, product, dlq_window),
            failed_prices=_price_stats(conn, DlqEvent.price, dlq_window),
            processed_prices=_price_stats(conn, ProcessedOrder.price, done_window),
            running_average_by_product=_average_by_product(conn, done_window),
            running_average_curve=_average_curve(conn, done_window),
            backlog=_backlog(conn),
            oldest_unresolved_at=_oldest_unresolved(conn, failed_at),
            replay=_replay_stats(conn, since),
        )


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store always writes UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _counts(conn: Connection, key: Any, where: list[ColumnElement[bool]]) -> dict[str, int]:
    n = func.count().label("n")
    stmt = select(key, n).where(*where).group_by(key).order_by(n.desc(), key)
    return {str(k): int(v) for k, v in conn.execute(stmt)}


def _price_stats(conn: Connection, price: Any, where: list[ColumnElement[bool]]) -> PriceStats:
    where = [*where, price.is_not(None)]
    row = conn.execute(
        select(func.count(), func.min(price), func.max(price), func.avg(price)).where(*where)
    ).one()
    count = int(row[0])
    if count == 0:
        return PriceStats(count=0)
    # Median without percentile functions (SQLite has none): the middle one or two rows.
    middle = select(price).where(*where).order_by(price).offset((count - 1) // 2)
    values = list(conn.scalars(middle.limit(2 - count % 2)))
    median = sum(values) / len(values)
    return PriceStats(count, float(row[1]), float(row[2]), float(row[3]), float(median))


def _average_by_product(conn: Connection, where: list[ColumnElement[bool]]) -> dict[str, float]:
    stmt = (
        select(ProcessedOrder.product, func.avg(ProcessedOrder.price))
        .where(*where)
        .group_by(ProcessedOrder.product)
        .order_by(ProcessedOrder.product)
    )
    return {str(product): float(avg) for product, avg in conn.execute(stmt)}


def _average_curve(
    conn: Connection, where: list[ColumnElement[bool]]
) -> list[tuple[datetime, float]]:
    total = int(conn.scalar(select(func.count()).select_from(ProcessedOrder).where(*where)) or 0)
    if total == 0:
        return []
    order = (ProcessedOrder.processed_at, ProcessedOrder.order_id)
    ranked = (
        select(
            ProcessedOrder.processed_at.label("at"),
            func.avg(ProcessedOrder.price).over(order_by=order, rows=(None, 0)).label("avg"),
            func.row_number().over(order_by=order).label("rn"),
        )
        .where(*where)
        .subquery()
    )
    # Thin out evenly in SQL so a large table never travels to the report.
    step = max(1, math.ceil(total / CURVE_POINTS))
    keep = or_(ranked.c.rn % step == 0, ranked.c.rn == 1, ranked.c.rn == total)
    stmt = select(ranked.c.at, ranked.c.avg).where(keep).order_by(ranked.c.rn)
    return [(_utc(at), float(avg)) for at, avg in conn.execute(stmt)]


def _backlog(conn: Connection) -> dict[str, int]:
    counts = dict.fromkeys((status.value for status in DlqStatus), 0)
    stmt = select(DlqEvent.status, func.count()).group_by(DlqEvent.status)
    counts.update({str(status): int(n) for status, n in conn.execute(stmt)})
    return counts


def _oldest_unresolved(conn: Connection, failed_at: ColumnElement[Any]) -> datetime | None:
    stmt = select(func.min(failed_at)).where(DlqEvent.status.in_(UNRESOLVED))
    oldest = conn.scalar(stmt)
    return _utc(oldest) if oldest is not None else None


def _replay_stats(conn: Connection, since: datetime | None) -> ReplayStats:
    copy_processed = exists().where(
        ProcessedOrder.order_id == DlqEvent.order_id,
        ProcessedOrder.replay_id == DlqEvent.replay_id,
    )
    stmt = select(func.count(), func.coalesce(func.sum(case((copy_processed, 1), else_=0)), 0))
    stmt = stmt.where(DlqEvent.replayed_at.is_not(None))
    if since is not None:
        stmt = stmt.where(DlqEvent.replayed_at >= since)
    replayed, succeeded = conn.execute(stmt).one()
    return ReplayStats(replayed=int(replayed), succeeded=int(succeeded))


# -- Presentation --------------------------------------------------------------------


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
    blocks += ["\n".join([section.title, *_aligned(section)]) for section in sections(report)]
    return "\n\n".join(blocks)


def _aligned(section: Section) -> list[str]:
    rows = section.rows or [("(none)",) + ("",) * (len(section.headers) - 1)]
    widths = [max(map(len, column)) for column in zip(section.headers, *rows, strict=True)]
    lines = [section.headers, tuple("-" * w for w in widths), *rows]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]


def to_markdown(report: DlqReport, chart_name: str) -> str:
    """The report as a Markdown document that embeds the chart ``chart_name``."""
    stamp = report.generated_at.isoformat(timespec="seconds")
    out = [f"# orderproc DLQ report\n\nGenerated {stamp}.\n\n![DLQ report chart]({chart_name})"]
    for section in sections(report):
        cells = [section.headers, *(section.rows or [("(none)",) * len(section.headers)])]
        lines = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("---" for _ in section.headers) + "|")
        out.append(f"## {section.title}\n\n" + "\n".join(lines))
    out.append(DEFINITIONS)
    return "\n\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def csv_rows(report: DlqReport) -> list[tuple[str, str, str, Any]]:
    """Tidy rows ``(section, key, metric, value)`` with unrounded values."""
    rows: list[tuple[str, str, str, Any]] = []
    for section, counts in (
        ("inflow_by_reason", report.inflow_by_reason),
        ("inflow_by_category", report.inflow_by_category),
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


def generate_report(
    database_url: str, folder: Path, *, since: datetime | None = None, now: datetime | None = None
) -> tuple[DlqReport, ReportFiles]:
    """Build the report from the store at ``database_url`` and write it under ``folder``.

    Raises:
        StoreError: the store cannot be read (unreachable, or not migrated yet).
    """
    engine = make_engine(database_url)
    try:
        report = build_report(engine, now=now, since=since)
    except SQLAlchemyError as exc:
        raise store_error("could not read the DLQ store", exc) from exc
    finally:
        engine.dispose()
    return report, write_report(report, folder)


def write_report(report: DlqReport, folder: Path) -> ReportFiles:
    """Write ``report.md``, ``report.csv`` and ``chart.png`` into a new subfolder.

    The subfolder is ``dlq-report-<UTC time>`` under ``folder``, so hourly reports
    pile up side by side and a rerun for the same time overwrites its own files.
    """
    stamp = report.generated_at.strftime("%Y%m%dT%H%M%SZ")
    target = Path(folder) / f"dlq-report-{stamp}"
    target.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(target, target / "report.md", target / "report.csv", target / "chart.png")
    draw_chart(report, files.chart)
    files.markdown.write_text(to_markdown(report, files.chart.name), encoding="utf-8")
    with files.csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("section", "key", "metric", "value"))
        writer.writerows(("" if v is None else v for v in row) for row in csv_rows(report))
    return files


# -- Chart -----------------------------------------------------------------------------


def draw_chart(report: DlqReport, path: Path) -> None:
    """Six panels (inflow, backlog, prices, running average) as one PNG."""
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    window = "all time" if report.since is None else f"since {report.since:%Y-%m-%d %H:%M}Z"
    fig.suptitle(f"orderproc DLQ report, {report.generated_at:%Y-%m-%d %H:%M}Z ({window})")
    axes = fig.subplots(2, 3)
    _bars(axes[0][0], "DLQ inflow by reason", report.inflow_by_reason, "tab:red")
    _bars(axes[0][1], "DLQ inflow by category", report.inflow_by_category, "tab:red")
    _bars(axes[0][2], "DLQ inflow by product", report.inflow_by_product, "tab:red")
    _bars(axes[1][0], "Review backlog by status", report.backlog, "tab:blue")
    _price_panel(axes[1][1], report)
    _curve_panel(axes[1][2], report)
    fig.savefig(path, format="png")


def _bars(ax: Any, title: str, counts: Mapping[str, int], color: str, top: int = 8) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    items = list(counts.items())[:top]
    if not items:
        _no_data(ax)
        return
    labels = [k if len(k) <= 32 else k[:31] + "\u2026" for k, _ in items]
    values = [n for _, n in items]
    bars = ax.barh(labels[::-1], values[::-1], color=color)
    ax.bar_label(bars, padding=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(*values, 1) * 1.15)  # room for the labels, and no negative axis at 0
    ax.set_xlabel("records")


def _price_panel(ax: Any, report: DlqReport) -> None:
    ax.set_title("Prices: failed vs processed")
    metrics = ("min", "median", "mean", "max")
    groups = (
        ("failed", report.failed_prices, "tab:red"),
        ("processed", report.processed_prices, "tab:green"),
    )
    if not any(stats.count for _, stats, _ in groups):
        _no_data(ax)
        return
    for offset, (name, stats, color) in zip((-0.2, 0.2), groups, strict=True):
        values = [getattr(stats, m) or 0.0 for m in metrics]
        xs = [i + offset for i in range(len(metrics))]
        ax.bar(xs, values, width=0.4, color=color, label=f"{name} (n={stats.count})")
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylabel("price")
    ax.legend()


def _curve_panel(ax: Any, report: DlqReport) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    ax.set_title("Running average of processed prices")
    if not report.running_average_curve:
        _no_data(ax)
        return
    times = [at for at, _ in report.running_average_curve]
    values = [avg for _, avg in report.running_average_curve]
    ax.plot(times, values, color="tab:green", marker="." if len(values) < 50 else None)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib.dates is untyped
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel("processed at (UTC)")
    ax.set_ylabel("average price")


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])
