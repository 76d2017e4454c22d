"""One function per DAG task: what ``orders_dlq_drain``, ``orders_dlq_replay`` and
``orders_dlq_report`` run, with Airflow's connections in and plain dicts out.

Kafka clients come from the ``kafka_default`` connection through the provider's
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

from airflow.sdk.exceptions import AirflowFailException

from orderproc.airflow.connections import DB_CONN_ID, KAFKA_CONN_ID, database_url
from orderproc.airflow.hooks import dlq_consumer, replay_producer, replay_reader
from orderproc.airflow.params import DrainParams, ReplayParams, ReportParams, replay_request
from orderproc.config import get_settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.replay import replay_id_for, replay_with_settings
from orderproc.dlq.summary import summary_markdown as replay_summary
from orderproc.errors import ConfigError
from orderproc.report import generate_report
from orderproc.report.render import fmt_age, format_table

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
    """Task ``orders_dlq_replay.replay``: replay the rows the params select.

    ``triggered_by`` (the run's triggering Airflow user) is named in the audit rows.
    """
    with _params_fail_fast():
        request = replay_request(ReplayParams.parse(params))
    settings = get_settings()
    result = replay_with_settings(
        settings,
        request,
        database_url=database_url(db_conn_id, settings),
        replay_id=replay_id_for(run_id),
        actor=_actor(run_id, triggered_by) if run_id else None,
        producer=lambda: replay_producer(settings, kafka_conn_id),
        reader=lambda: replay_reader(settings, kafka_conn_id),
    )
    return result.to_dict()


def log_replay_summary(result: Mapping[str, Any]) -> None:
    """Task ``orders_dlq_replay.summarise``: the run as a Markdown table in the task log.

    Logged, not returned: Airflow logs a task's return value too, and the table would
    then appear twice.
    """
    log.info("replay summary\n%s", replay_summary(result))


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
