"""Waiting for the live consumer's verdict on a replay without holding a worker slot:
``AwaitOutcomes``, a deferrable operator, and ``OutcomeTrigger``, which looks for it.

The operator looks once on a worker; if the verdict is not in yet it defers: the task
becomes ``deferred``, gives its worker slot back, and the triggerer runs
``OutcomeTrigger``, which looks again every few seconds (``poll_interval``: about twenty
looks within the run's outcome timeout) on a thread of its own, so the triggerer's event
loop never blocks. Neither holds the replay lease or any lock while it waits: a look
only reads the store and the DLQ and records outcomes, which are facts
(``orderproc.dlq.outcomes``). When the verdict is in (every copy decided, failures past
the threshold, or the timeout) the trigger fires and the task resumes on a worker, where
``act_on_outcomes`` pauses or finishes the run in a turn of its own.

Light to import (the DAG file uses it while it is parsed): the dead-letter wing and the
Kafka clients load when a task or the trigger runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from orderproc.airflow.connections import DB_CONN_ID, KAFKA_CONN_ID

log = logging.getLogger(__name__)

DEFER_MARGIN = timedelta(minutes=10)
"""A deferral ends in failure this long after the run's outcome timeout (a triggerer
that never fires): the trigger itself fires at the timeout."""


class AwaitOutcomes(BaseOperator):
    """Wait, deferred, for the verdict on what the run has published; then act on it."""

    ui_color = "#fdf3d8"

    def __init__(
        self, *, kafka_conn_id: str = KAFKA_CONN_ID, db_conn_id: str = DB_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.kafka_conn_id, self.db_conn_id = kafka_conn_id, db_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from orderproc.airflow.tasks import look_at_outcomes

        verdict, poll_s = look_at_outcomes(run_id=context["run_id"], **self._conns())
        if verdict.call == "wait":
            timeout_s = float(dict(context["params"]).get("outcome_timeout_s") or 300)
            log.info("replay %s: deferred until the verdict is in", verdict.said)
            self.defer(
                trigger=OutcomeTrigger(run_id=context["run_id"], poll_s=poll_s, **self._conns()),
                method_name="resume",
                timeout=timedelta(seconds=timeout_s) + DEFER_MARGIN,
            )
        return self.resume(context, verdict.to_dict())

    def resume(self, context: Any, event: Mapping[str, Any]) -> dict[str, Any]:
        """Act on the verdict (on a worker: a pause is a turn of the replay lease)."""
        from orderproc.airflow.tasks import act_on_outcomes

        user = getattr(context.get("dag_run"), "triggering_user_name", None)
        log.info("replay verdict: %s", event.get("said"))
        act_on_outcomes(event, run_id=context["run_id"], triggered_by=user, **self._conns())
        return dict(event)

    def _conns(self) -> dict[str, str]:
        return {"kafka_conn_id": self.kafka_conn_id, "db_conn_id": self.db_conn_id}


class OutcomeTrigger(BaseTrigger):
    """Looks at a replay run's outcomes every ``poll_s`` seconds until the verdict is in."""

    def __init__(
        self,
        *,
        run_id: str,
        poll_s: float,
        kafka_conn_id: str = KAFKA_CONN_ID,
        db_conn_id: str = DB_CONN_ID,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.run_id, self.poll_s = run_id, poll_s
        self.kafka_conn_id, self.db_conn_id = kafka_conn_id, db_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "poll_s": self.poll_s,
                "kafka_conn_id": self.kafka_conn_id,
                "db_conn_id": self.db_conn_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                said = await asyncio.to_thread(self._look)
            except Exception as exc:  # a look that failed is tried again; the timeout still holds
                log.warning("replay %s: could not look at the outcomes: %s", self.run_id, exc)
                said = None
            if said is not None and said["call"] != "wait":
                yield TriggerEvent(said)  # type: ignore[no-untyped-call]
                return
            await asyncio.sleep(self.poll_s)

    def _look(self) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from orderproc.airflow.tasks import look_at_outcomes

        try:
            verdict, _ = look_at_outcomes(run_id=self.run_id, kafka_conn_id=self.kafka_conn_id,
                                          db_conn_id=self.db_conn_id)  # fmt: skip
        except AirflowSkipException as exc:  # the run ended meanwhile: nothing to wait for
            return {"call": "go", "said": str(exc), "bad": False}
        return verdict.to_dict()
