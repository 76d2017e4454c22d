"""
### Replay reviewed DLQ records to `orders`

Triggered by hand from the trigger form or from the **DLQ review** page (Browse
menu). Selects rows of the DLQ store (status `approved`; optionally by event id,
order id, reason, category and the time they were dead-lettered), claims them
atomically (two runs never publish the same row), and publishes each order (the
corrected payload if the reviewer edited it) to `ORDERPROC_ORDERS_TOPIC` through
the Kafka connection **`kafka_default`**.

* Every record carries lineage headers: `replay.id` (this run), `replay.count`,
  `replay.dlq.topic`, `replay.dlq.partition`, `replay.dlq.offset`.
* The task waits for every delivery report: acknowledged rows become `replayed`
  with their new partition/offset; any failed delivery **fails** the task and its
  rows stay replayable.
* Rows already replayed `max_replays` times are `parked`; rows whose order does not
  encode with the Avro schema are `rejected`. Every change writes an audit row.
* `dry_run` (on by default: switch it off to publish) lists exactly what would
  happen and changes nothing.
* A parameter that is not valid fails the run at once, without retries; `since` and
  `until` must be RFC 3339 times (checked by the form), `until` after `since`.
* `rate_per_sec` throttles publishing (0 = as fast as possible).

The `summarise` task logs the run as a table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from orderproc.airflow.notify import failure_notifier
from orderproc.errors import HIGH_PRICE_REASON, ErrorCategory
from orderproc.models import DEFAULT_MAX_REPLAYS, REPLAYABLE_STATUSES


@dag(
    dag_id="orders_dlq_replay",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["orderproc", "dlq", "replay"],
    default_args={
        "owner": "orderproc",
        "retries": 1,
        "retry_delay": timedelta(minutes=1),
        # A task that failed its last try is told (log + ORDERPROC_ALERT_WEBHOOK_URL).
        "on_failure_callback": failure_notifier(),
    },
    params={
        "status": Param(
            "approved",
            type="string",
            enum=list(REPLAYABLE_STATUSES),
            title="Status",
            description="Replay rows in this review state.",
        ),
        "event_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "integer", "minimum": 1},
            title="DLQ event ids",
            description="Only these rows of the DLQ store (the review page fills this; "
            "empty: any).",
        ),
        "order_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="Order ids",
            description="Only these orders (one per line; empty: any).",
        ),
        "reasons": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            examples=[HIGH_PRICE_REASON, "orderId is empty", "product is empty"],
            title="Reasons",
            description="Only rows dead-lettered for these reasons (empty: any).",
        ),
        "categories": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            examples=[c.value for c in ErrorCategory],
            title="Error categories",
            description="Only rows of these error categories (empty: any).",
        ),
        "since": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Dead-lettered since",
            description="An RFC 3339 time with its offset, e.g. 2026-03-01T00:00:00Z.",
        ),
        "until": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Dead-lettered before",
            description="An RFC 3339 time with its offset; after `since`.",
        ),
        "max_messages": Param(100, type="integer", minimum=1, title="Max messages"),
        "rate_per_sec": Param(
            0,
            type="number",
            minimum=0,
            title="Rate (records/s)",
            description="0 = unthrottled.",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description="Only show what would be replayed. Switch off to publish.",
        ),
        "max_replays": Param(
            DEFAULT_MAX_REPLAYS,
            type="integer",
            minimum=1,
            title="Replay cap",
            description="Rows of orders replayed this often already are parked instead.",
        ),
    },
)
def orders_dlq_replay() -> None:
    @task
    def replay(
        params: dict[str, Any] | None = None, run_id: str | None = None, dag_run: Any = None
    ) -> dict[str, Any]:
        """Claim, publish and mark the selected rows; returns what happened to each."""
        from orderproc.airflow.tasks import replay_dlq

        user = getattr(dag_run, "triggering_user_name", None)
        return replay_dlq(params, run_id=run_id, triggered_by=user)

    @task
    def summarise(result: dict[str, Any]) -> None:
        """Log the run as a Markdown table."""
        from orderproc.airflow.tasks import log_replay_summary

        log_replay_summary(result)

    summarise(replay())


orders_dlq_replay()
