"""The DLQ audit report's chart: six panels (inflow, backlog, prices, running average), one PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orderproc.report.aggregate import DlqReport


def draw_chart(report: DlqReport, path: Path) -> None:
    """Six panels (inflow, backlog, prices, running average) as one PNG."""
    chart_figure(report).savefig(path, format="png")


def chart_figure(report: DlqReport) -> Any:
    """The chart as a matplotlib ``Figure`` (on an Agg canvas)."""
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
    return fig


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
    # A third of the figure's width holds about five time labels side by side; the
    # formatter's offset (the date, drawn under the ticks' right end) would sit on the axis
    # label, so the dates go into the label instead (tests/unit/report: no text overlaps).
    locator = AutoDateLocator(minticks=3, maxticks=5)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = ConciseDateFormatter(locator, show_offset=False)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    first, last = times[0], times[-1]
    span = (
        f"{first:%Y-%m-%d}"
        if first.date() == last.date()
        else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    )
    ax.set_xlabel(f"processed at (UTC), {span}")
    ax.set_ylabel("average price")


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])
