"""Build deploy/grafana/dashboards/orderproc.json with Grafana's own typed builders.

    .venv/bin/python deploy/grafana/build.py          # rewrite the JSON
    .venv/bin/python deploy/grafana/build.py --check  # exit 1 if the JSON is out of date

``PANELS`` is the dashboard's content: every query in it runs against a real Prometheus
scraping the real workers in tests/integration/observability (and must return data).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "dashboards" / "orderproc.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="orderproc-prometheus")
"""The data source provisioning/datasources/prometheus.yml creates."""
DESCRIPTION = (
    "Orders through Kafka: throughput, lag, retries, dead letters, review, replays and the "
    "flood breaker (built by deploy/grafana/build.py)"
)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    stacked: bool = False


ROWS: dict[str, tuple[Chart, ...]] = {
    "Stream": (
        Chart("Throughput", "Orders produced, records consumed (orders and retry topics) "
              "and orders processed, per second.", "ops", (
            Query("orderproc:orders_produced:rate5m", "produced"),
            Query("sum(orderproc:messages_consumed:rate5m)", "consumed"),
            Query("orderproc:orders_processed:rate5m", "processed"),
        )),
        Chart("Lag per group", "Records each group has still to read (librdkafka statistics "
              "of the consumer and the DLQ monitor), and dead letters the drain has not stored.",
              "short", (
            Query("orderproc:consumer_lag_messages:sum", "{{group}}"),
            Query("sum(orderproc_dlq_undrained_messages)", "drain (not drained yet)"),
        )),
        Chart("Retry backlog", "Records waiting on each retry topic for their next attempt.",
              "short", (Query("orderproc:retry_backlog_messages:sum", "{{topic}}"),)),
        Chart("Batch time (p95)", "Time to handle a batch and make it durable.", "s", (
            Query("histogram_quantile(0.95, sum by (le) "
                  "(rate(orderproc_batch_processing_seconds_bucket[5m])))", "p95"),
        )),
    ),
    "Dead letters and review": (
        Chart("DLQ inflow by category", "Dead letters per second, by why they failed.", "ops",
              (Query("orderproc:dlq_inflow_by_category:rate5m", "{{category}}"),), stacked=True),
        Chart("Review backlog by status", "Failures in the DLQ store, by review status.",
              "short", (Query("max by (status) (orderproc_review_backlog_events)", "{{status}}"),)),
        Chart("Oldest unresolved failure", "How long the oldest new/approved failure has "
              "waited (alert: ReviewBacklogOverSlo at 24 h).", "s",
              (Query("max(orderproc_review_oldest_unresolved_age_seconds)", "age"),), "stat"),
        Chart("Oldest undrained dead letter", "How long the oldest dead letter has waited "
              "for the drain (alert: DeadLettersNotDrained at 30 min).", "s",
              (Query("max(orderproc_dlq_oldest_undrained_age_seconds)", "age"),), "stat"),
    ),
    "Health and replays": (
        Chart("Flood breaker", "1 while a consumer's flood breaker holds consumption paused.",
              "short", (Query("max by (instance) (orderproc_flood_breaker_open)",
                              "{{instance}}"),), "stat"),
        Chart("Workers healthy", "1 per worker that is scraped and whose loop turns.", "short", (
            Query('min by (job) (up{job=~"orderproc-.*"})', "{{job}} up"),
            Query("min by (job) (orderproc_worker_healthy)", "{{job}} healthy"),
        ), "stat"),
        Chart("Replay outcomes", "What became of replayed orders when consumed, per second.",
              "ops", (Query("orderproc:replayed_orders:rate15m", "{{outcome}}"),), stacked=True),
        Chart("Paused partitions", "Partitions a consumer holds paused (retry delays, breaker).",
              "short", (Query("sum by (instance) (orderproc_paused_partitions)",
                              "{{instance}}"),)),
    ),
}  # fmt: skip


def panel(chart: Chart) -> Any:
    builder: Any = stat.Panel() if chart.kind == "stat" else timeseries.Panel()
    builder = (
        builder.title(chart.title)
        .description(chart.description)
        .unit(chart.unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(6)
    )
    if chart.stacked:
        builder = builder.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
    for i, q in enumerate(chart.queries):
        target = (
            prometheus.Dataquery()
            .expr(q.expr)
            .legend_format(q.legend)
            .ref_id(chr(ord("A") + i))
            .datasource(DATASOURCE)
        )
        builder = builder.with_target(target)
    return builder


def build() -> dict[str, Any]:
    board = (
        gd.Dashboard("orderproc")
        .uid("orderproc")
        .description(DESCRIPTION)
        .tags(["orderproc", "kafka"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("utc")
    )
    for title, charts in ROWS.items():
        board = board.with_row(gd.Row(title))
        for chart in charts:
            board = board.with_panel(panel(chart))
    doc: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return doc


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query of a dashboard JSON document."""
    return [
        (p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", []) if "expr" in t
    ]


def rendered() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != rendered():
            print(f"{OUT} is out of date: run deploy/grafana/build.py", file=sys.stderr)
            sys.exit(1)
    else:
        OUT.write_text(rendered())
        print(f"wrote {OUT}")
