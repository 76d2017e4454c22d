"""``orders_dlq_drain`` run with ``dag.test()`` against the real broker and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, select

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.store.tables import AuditLog

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]

DAG_ID = "orders_dlq_drain"


def test_the_dag_is_scheduled_bounded_and_documented(load_dag: Callable[[str], Any]) -> None:
    dag = load_dag(DAG_ID)

    assert dag.timetable.expression == "*/5 * * * *"
    assert (dag.max_active_runs, dag.catchup) == (1, False)
    assert {"orderproc", "dlq"} <= set(dag.tags)
    assert "kafka_default" in dag.doc_md and dag.default_args["retries"] >= 1
    assert set(dag.params.keys()) == {"max_messages", "timeout_s"}


def test_every_record_is_stored_once_across_runs(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    engine: Engine,
    make_orders: Helper,
    dead_letter: Helper,
    produce_raw: Helper,
    count_rows: Helper,
) -> None:
    dead_letter(dag_settings, make_orders(6))
    produce_raw(dag_settings, [b"\x00 not an envelope"])
    dag = load_dag(DAG_ID)

    first = dag.test()
    second = dag.test()

    assert (first.state, second.state) == ("success", "success")
    assert count_rows(engine) == 7
    with engine.connect() as conn:
        actors = set(conn.scalars(select(AuditLog.actor).where(AuditLog.action == "drained")))
    assert actors == {f"airflow:{first.run_id}"}


def test_a_run_after_a_crash_between_the_commits_completes_without_duplicates(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    engine: Engine,
    make_orders: Helper,
    dead_letter: Helper,
    count_rows: Helper,
) -> None:
    dead_letter(dag_settings, make_orders(10))

    def crash(_records: Sequence[Any]) -> None:
        raise RuntimeError("worker killed after the database commit")

    crashed = dag_settings.model_copy(update={"batch_size": 3})
    with pytest.raises(RuntimeError):
        run_drain(crashed, after_db_commit=crash)
    assert count_rows(engine) == 3

    run = load_dag(DAG_ID).test()

    assert run.state == "success"
    assert count_rows(engine) == 10


def test_the_task_fails_when_the_broker_is_unreachable_and_the_failure_is_told(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    kafka_connection: Callable[..., None],
    engine: Engine,
    closed_port: int,
    count_rows: Helper,
    webhook: Any,
) -> None:
    kafka_connection(f"127.0.0.1:{closed_port}", **{"socket.timeout.ms": 1000})
    dag = load_dag(DAG_ID)
    dag.task_dict["drain"].retries = 0  # its last try: dag.test() would wait out the delay

    run = dag.test(run_conf={"timeout_s": 1})

    assert run.state == "failed"
    assert run.get_task_instance("drain").state == "failed"
    assert count_rows(engine) == 0
    # on_failure_callback: one line to the alert webhook, naming the run and the cause.
    (told,) = webhook.texts()
    assert told.startswith(f"orderproc: {DAG_ID}.drain failed after 1 tries (run ")
    assert f"127.0.0.1:{closed_port}" in told
    assert "\n" not in told
