"""
### Drain `orders_dlq` into the DLQ store

Every five minutes, reads the dead-letter topic (`ORDERPROC_DLQ_TOPIC`, default
`orders_dlq`) through the Kafka connection **`kafka_default`** and stores each
record as one row of `dlq_events` in the store (connection **`orderproc_db`**,
else `ORDERPROC_DATABASE_URL`), where it waits for review.

* Auto-commit is off: offsets are committed only after the rows are committed,
  and a record already stored is ignored, so every DLQ record is stored exactly
  once, even after a crash or a rerun.
* Bounded: a run stops when it has caught up with the end offsets it saw at the
  start (or after `max_messages`). An unreachable broker or a missing topic
  **fails** the task instead of passing as an empty queue.

Review the rows with `orderproc dlq list|show|approve|reject|edit`, then replay them
with the `orders_dlq_replay` DAG.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from orderproc.airflow.notify import failure_notifier


@dag(
    dag_id="orders_dlq_drain",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["orderproc", "dlq"],
    default_args={
        "owner": "orderproc",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        # A task that failed its last try is told (log + ORDERPROC_ALERT_WEBHOOK_URL).
        "on_failure_callback": failure_notifier(),
    },
    params={
        "max_messages": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Max messages",
            description="Stop after this many records (empty: until caught up).",
        ),
        "timeout_s": Param(
            10,
            type="number",
            minimum=1,
            title="Broker timeout (s)",
            description="How long to wait for the broker's metadata and offsets before failing.",
        ),
    },
)
def orders_dlq_drain() -> None:
    @task
    def drain(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        """Store the new DLQ records; returns counts and the committed offsets."""
        from orderproc.airflow.tasks import drain_dlq

        return drain_dlq(params, run_id=run_id)

    drain()


orders_dlq_drain()
