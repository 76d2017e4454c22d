"""One function per DAG task: what ``orders_dlq_drain``, ``orders_dlq_replay`` and
``orders_dlq_report`` run, with Airflow's connections in and plain dicts out.

A replay is several tasks (the canary, the waits, the steps, the summary), each a
turn of the run (``orderproc.dlq.steps``), found again by the Airflow run id. Kafka
clients come from the ``kafka_default`` connection through the provider's
hooks (``orderproc.airflow.hooks``); the store is the ``orderproc_db`` connection
when it exists, else ``ORDERPROC_DATABASE_URL`` / the embedded default. A bad
parameter fails the task at once, without retries (``AirflowFailException``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from orderproc.airflow.connections import DB_CONN_ID, KAFKA_CONN_ID, database_url
from orderproc.airflow.hooks import dlq_consumer, replay_producer, replay_reader
from orderproc.airflow.params import DrainParams, ReplayParams, ReportParams, replay_request
from orderproc.airflow.rest import api_base_url
from orderproc.config import get_settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.replay import clients_for, replay_id_for
from orderproc.dlq.runs import RunState
from orderproc.dlq.steps import act_on, carry_on, look_while_waiting, start, stop
from orderproc.dlq.store import DlqStore
from orderproc.dlq.summary import run_markdown, run_report, said
from orderproc.dlq.summary import summary_markdown as replay_summary
from orderproc.dlq.turn import Clients
from orderproc.dlq.verdict import Verdict, poll_interval
from orderproc.errors import ConfigError
from orderproc.models import ReplayOptions
from orderproc.report import generate_report
from orderproc.report.render import fmt_age, format_table
from orderproc.store.engine import open_engine
from orderproc.store.tables import ReplayRun

log = logging.getLogger(__name__)


@contextmanager
def _params_fail_fast() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        raise AirflowFailException(str(exc)) from exc  # a bad param: retrying cannot help


def _actor(run_id: str | None, user: str | None = None) -> str:
    """Who the audit rows name: the run, and the Airflow user who triggered it if known."""
    actor = f"airflow:{run_id}" if run_id else "airflow"
    return f"{actor} by {user}" if user else actor


def drain_dlq(
    params: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> dict[str, Any]:
    """Task ``orders_dlq_drain.drain``: drain the DLQ into the store; fails if Kafka is down."""
    with _params_fail_fast():
        parsed: DrainParams = DrainParams.parse(params)
    settings = get_settings()
    result = run_drain(
        settings,
        consumer=dlq_consumer(settings, kafka_conn_id, parsed.timeout_s),
        database_url=database_url(db_conn_id, settings),
        max_messages=parsed.max_messages,
        metadata_timeout_s=parsed.timeout_s,
        actor=_actor(run_id),
    )
    return result.to_dict()


def replay_dlq(
    params: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    triggered_by: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> dict[str, Any]:
    """Task ``orders_dlq_replay.replay``: the run's first turn: freeze the rows the params
    select and publish the canary (everything waits for ``publish_rest`` when the canary
    is 0); a dry run only plans.

    ``triggered_by`` (the run's triggering Airflow user) is named in the audit rows.
    """
    with _params_fail_fast():
        request = replay_request(ReplayParams.parse(params))
    with _replay(run_id, kafka_conn_id, db_conn_id) as (store, clients):
        result = start(store, request, clients, replay_id=replay_id_for(run_id),
                       actor=_actor(run_id, triggered_by))  # fmt: skip
    return result.to_dict()


def publish_rest(
    *,
    run_id: str | None = None,
    triggered_by: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> dict[str, Any]:
    """Task ``orders_dlq_replay.publish_rest``: the rest in steps, the outcomes looked at
    between two steps (a bad verdict pauses the run); skipped when the run has ended
    (paused after its canary) or never published (a dry run)."""
    with _replay(run_id, kafka_conn_id, db_conn_id) as (store, clients):
        replay_id = replay_id_for(run_id)
        _running_or_skip(store.run(replay_id))
        result = carry_on(store, clients, replay_id=replay_id, actor=_actor(run_id, triggered_by))
    return result.to_dict()


def look_at_outcomes(
    *, run_id: str | None, kafka_conn_id: str = KAFKA_CONN_ID, db_conn_id: str = DB_CONN_ID
) -> tuple[Verdict, float]:
    """One look while the run waits (``AwaitOutcomes`` and its trigger): the verdict and
    the seconds until the next look; skipped (``AirflowSkipException``) when there is
    nothing to wait for."""
    with _replay(run_id, kafka_conn_id, db_conn_id) as (store, clients):
        replay_id = replay_id_for(run_id)
        run = _running_or_skip(store.run(replay_id))
        verdict = look_while_waiting(store, clients, replay_id=replay_id)
        return verdict, poll_interval(ReplayOptions.model_validate(run.request))


def act_on_outcomes(
    verdict: Mapping[str, Any],
    *,
    run_id: str | None,
    triggered_by: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> None:
    """After a wait: pause the run (its rows not published back to approved), or finish
    it at the end, as the verdict says."""
    with _replay(run_id, kafka_conn_id, db_conn_id) as (store, clients):
        act_on(store, clients, Verdict.from_dict(dict(verdict)), replay_id=replay_id_for(run_id),
               actor=_actor(run_id, triggered_by))  # fmt: skip


def log_replay_summary(
    result: Mapping[str, Any] | None,
    params: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> None:
    """Task ``orders_dlq_replay.summarise`` (runs whatever happened before it): the run
    in words and a table in the task log, then its end. A run still going here was
    stopped by a task that failed for good: its queued rows go back to approved. A run
    that paused (or failed again past the threshold, or stopped) fails this task, with
    its verdict as the message (the failure callback posts it), unless ``pause_fails_run``
    is off.

    Logged, not returned: Airflow logs a task's return value too, and the table would
    then appear twice.
    """
    replay_id = replay_id_for(run_id)
    with _replay(run_id, kafka_conn_id, db_conn_id) as (store, clients):
        if store.run(replay_id) is not None:
            stop(store, clients, "a task of the run failed before it finished (see its log)",
                 replay_id=replay_id, actor=_actor(run_id))  # fmt: skip
        report = run_report(store, replay_id)
    if report is None:
        if not result:
            raise AirflowFailException("the replay did not start: see the replay task's log")
        log.info("replay summary\n%s", replay_summary(result))
        return
    notes = [line for line in said(result)[1:] if not line.startswith("took")] if result else []
    page = f"{api_base_url()}/orderproc/runs/{quote(str(run_id), safe='')}"
    if report.failures:
        notes.append(f"the failures: {page}#failed-again")
    log.info("replay summary\n%s", run_markdown(report, notes))
    fails = bool(dict(params or {}).get("pause_fails_run", True))
    if report.run.failed and fails:
        verdict = report.run.said or f"replay {replay_id} {report.run.state}"
        raise AirflowFailException(f"{verdict} (the run: {page})")


@contextmanager
def _replay(
    run_id: str | None, kafka_conn_id: str, db_conn_id: str
) -> Iterator[tuple[DlqStore, Clients]]:
    """The store and the replay's clients from the task's connections."""
    settings = get_settings()
    clients = clients_for(
        settings,
        producer=lambda: replay_producer(settings, kafka_conn_id),
        reader=lambda: replay_reader(settings, kafka_conn_id),
    )
    with open_engine(database_url(db_conn_id, settings)) as engine:
        yield DlqStore(engine), clients


def _running_or_skip(run: ReplayRun | None) -> ReplayRun:
    if run is None:
        raise AirflowSkipException("nothing was published (a dry run, or nothing selected)")
    if run.state != RunState.RUNNING:
        raise AirflowSkipException(f"the run has ended: {run.said or run.state}")
    return run


def write_dlq_report(
    params: Mapping[str, Any] | None = None, *, db_conn_id: str = DB_CONN_ID
) -> dict[str, str]:
    """Task ``orders_dlq_report.write_dlq_report``: aggregate, write the files, log the table."""
    with _params_fail_fast():
        parsed: ReportParams = ReportParams.parse(params)
    settings = get_settings()
    folder = parsed.reports_dir or settings.effective_reports_dir
    report, files = generate_report(database_url(db_conn_id, settings), folder, since=parsed.since)
    log.info("%s", format_table(report))
    log.info("report files: %s", files.as_dict())
    age = report.oldest_unresolved_age
    if parsed.slo_hours is not None and age is not None and age > timedelta(hours=parsed.slo_hours):
        # After the files are written: the report is there to read; the run says the SLO failed.
        raise AirflowFailException(
            f"review SLO missed: the oldest unresolved failure has waited {fmt_age(age)}, "
            f"over {parsed.slo_hours:g} h (report: {files.markdown})"
        )
    return files.as_dict()
