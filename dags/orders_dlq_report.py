"""
### orders_dlq_report

Hourly audit of the dead-letter queue store: DLQ inflow by reason, category and
product; prices of failed vs processed orders; the running average; the review
backlog and the age of its oldest record; the replay success rate.

Each run writes `report.md`, `report.csv` and `chart.png` into a new
`dlq-report-<UTC time>` folder under the reports folder (`ORDERPROC_REPORTS_DIR`,
default `<ORDERPROC_DATA_DIR>/reports`) and logs the report as a table. The store
is the connection **`orderproc_db`**, else `ORDERPROC_DATABASE_URL` (default: the
embedded SQLite store). The task is one call into `orderproc.airflow.tasks`.

**Params** (manual runs): `reports_dir` overrides the reports folder; `since`
(ISO date-time) limits the window, default all time. A `since` that is not a date-time
fails the run at once, without retries.

**Review SLO**: when the oldest unresolved (new/approved) failure has waited longer than
`slo_hours` (24 by default; empty: no check), the run **fails** after writing the report,
naming the age, so the failure notification (`on_failure_callback`) tells someone. The
`ReviewBacklogOverSlo` Prometheus alert uses the same limit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from orderproc.airflow.notify import failure_notifier
from orderproc.models import REVIEW_SLO_HOURS


@dag(
    dag_id="orders_dlq_report",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["orderproc", "dlq", "report"],
    default_args={
        "owner": "orderproc",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        # A task that failed its last try is told (log + ORDERPROC_ALERT_WEBHOOK_URL).
        "on_failure_callback": failure_notifier(),
    },
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
        "slo_hours": Param(
            REVIEW_SLO_HOURS,
            type=["null", "number"],
            minimum=0,
            title="Review SLO (hours)",
            description="Fail the run (after writing the report) when the oldest unresolved "
            "failure has waited longer; empty: no check.",
        ),
    },
)
def orders_dlq_report() -> None:
    @task
    def write_dlq_report(params: dict[str, Any] | None = None) -> dict[str, str]:
        """Aggregate the store, write the report files, log the table."""
        from orderproc.airflow.tasks import write_dlq_report

        return write_dlq_report(params)

    write_dlq_report()


orders_dlq_report()
