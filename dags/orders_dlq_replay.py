"""
### Replay reviewed DLQ records to `orders`, watching what becomes of them

Triggered by hand from the trigger form or from the **DLQ review** page (Browse
menu). Selects rows of the DLQ store (status `approved`; optionally by event id,
order id, reason, category and the time they were dead-lettered) and publishes each
order (the corrected payload if the reviewer edited it) to `ORDERPROC_ORDERS_TOPIC`
through the Kafka connection **`kafka_default`**, watching the live consumer's verdict:

1. `replay` freezes the selection and publishes a **canary** (`canary`: rows, or a
   share such as `5%`; 0: none);
2. `await_canary` waits for the canary's outcomes **deferred** (no worker slot): each
   copy is *processed* (its `processed_orders` row carries the replay id) or *failed
   again* (a dead letter names the replay); it **pauses** the run when at least
   `pause_at_percent` of them failed again, or when they have not all arrived after
   `outcome_timeout_s`: the rows not published go back to `approved` (an audit row
   each, saying why) and nothing is published twice;
3. `publish_rest` publishes the rest in steps of `step_rows`, looking at the outcomes
   between steps (and pausing the same way);
4. `await_outcomes` waits for the last copies' outcomes (when there is a canary);
5. `summarise` logs the run in words and a table; a run that paused (or whose orders
   failed again past the threshold) **fails** here with its verdict as the message,
   so the operations alerts see it, unless `pause_fails_run` is off.

* Every record carries lineage headers: `replay.id` (this run), `replay.count`,
  `replay.dlq.topic`, `replay.dlq.partition`, `replay.dlq.offset`.
* Rows already replayed `max_replays` times are `parked`; rows whose order does not
  encode with the Avro schema are `rejected`. Every change writes an audit row.
* `dry_run` (on by default: switch it off to publish) lists exactly what would
  happen and changes nothing.
* A parameter that is not valid fails the run at once, without retries; `since` and
  `until` must be RFC 3339 times (checked by the form), `until` after `since`.
* `rate_per_sec` throttles publishing (0 = as fast as possible).

The form is derived from the replay's options (`orderproc.models.ReplayOptions`) and
`orderproc.airflow.params.ReplayParams`: a new option is one field there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import TriggerRule, dag, task

from orderproc.airflow.notify import failure_notifier
from orderproc.airflow.outcomes import AwaitOutcomes
from orderproc.airflow.params import ReplayParams, form_params


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
    params=form_params(ReplayParams),
)
def orders_dlq_replay() -> None:
    @task
    def replay(
        params: dict[str, Any] | None = None, run_id: str | None = None, dag_run: Any = None
    ) -> dict[str, Any]:
        """Freeze the selection and publish the canary (a dry run only plans)."""
        from orderproc.airflow.tasks import replay_dlq

        user = getattr(dag_run, "triggering_user_name", None)
        return replay_dlq(params, run_id=run_id, triggered_by=user)

    @task
    def publish_rest(run_id: str | None = None, dag_run: Any = None) -> dict[str, Any]:
        """Publish the rest in steps, the outcomes looked at between steps."""
        from orderproc.airflow.tasks import publish_rest

        user = getattr(dag_run, "triggering_user_name", None)
        return publish_rest(run_id=run_id, triggered_by=user)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summarise(
        result: dict[str, Any] | None,
        params: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        """Log the run in words and a table; fail with its verdict if it paused."""
        from orderproc.airflow.tasks import log_replay_summary

        log_replay_summary(result, params, run_id=run_id)

    started = replay()
    canary = AwaitOutcomes(task_id="await_canary")
    last = AwaitOutcomes(task_id="await_outcomes")
    started >> canary >> publish_rest() >> last >> summarise(started)


orders_dlq_replay()
