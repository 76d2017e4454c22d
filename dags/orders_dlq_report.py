"""
### orders_dlq_report

Hourly audit of the dead-letter queue store: DLQ inflow by reason, category and
product; prices of failed vs processed orders; the running average; the review
backlog and the age of its oldest record; the replay success rate.

Each run writes `report.md`, `report.csv` and `chart.png` into a new
`dlq-report-<UTC time>` folder under the reports folder (default
`<project>/reports`) and logs the report as a table. The store is the connection
**`orderproc_db`**, else `ORDERPROC_DATABASE_URL` (default: the embedded SQLite
store). The logic lives in `orderproc.report`.

**Params** (manual runs): `reports_dir` overrides the reports folder; `since`
(ISO date-time) limits the window, default all time. A `since` that is not a date-time
fails the run at once, without retries.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)


@dag(
    dag_id="orders_dlq_report",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["orderproc", "dlq", "report"],
    default_args={"owner": "orderproc", "retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "reports_dir": Param(
            None,
            type=["null", "string"],
            title="Reports folder",
            description="Where to write the report; empty: the orderproc reports folder.",
        ),
        "since": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Since",
            description="Only count DLQ rows, processed orders and replays from then on.",
        ),
    },
)
def orders_dlq_report() -> None:
    @task
    def write_dlq_report(params: dict[str, str | None]) -> dict[str, str]:
        """Aggregate the store, write the report files, log the table."""
        # Imported in the task so parsing the DAG file stays cheap (no SQLAlchemy, matplotlib).
        from airflow.sdk.exceptions import AirflowFailException

        from orderproc.airflow_support import database_url
        from orderproc.config import get_settings
        from orderproc.errors import ConfigError
        from orderproc.report import default_reports_dir, format_table, generate_report, parse_since

        try:
            since = parse_since(params.get("since"))
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc  # a bad param: retrying cannot help
        settings = get_settings()
        folder = Path(params.get("reports_dir") or default_reports_dir(settings))
        report, files = generate_report(database_url(settings=settings), folder, since=since)
        log.info("%s", format_table(report))
        log.info("report files: %s", files.as_dict())
        return files.as_dict()

    write_dlq_report()


orders_dlq_report()
