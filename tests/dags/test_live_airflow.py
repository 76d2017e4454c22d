"""The DAGs as a user meets them: through a real local Airflow's REST API, its scheduler,
its task runners and the task logs its UI shows (``live_airflow``: one per session)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine

from devstack.airflow import parallelism
from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.store.engine import make_engine

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.live_airflow import LiveAirflow

pytestmark = [
    pytest.mark.integration,
    # Airflow's own behaviour, whichever the store: one Airflow (on PostgreSQL) shows it.
    pytest.mark.parametrize("live_airflow", ["postgresql"], indirect=True),
]

REPLAY, DRAIN = "orders_dlq_replay", "orders_dlq_drain"


@pytest.fixture
def live_store(live_airflow: LiveAirflow) -> Iterator[DlqStore]:
    """The DLQ store the session's Airflow uses."""
    engine: Engine = make_engine(live_airflow.database_url)
    yield DlqStore(engine)
    engine.dispose()


def test_the_trigger_form_defaults_to_a_dry_run_and_its_lists_are_optional(
    live_airflow: LiveAirflow,
) -> None:
    with live_airflow.api("viewer") as api:
        params = api.get(f"/api/v2/dags/{REPLAY}/details").json()["params"]

    assert params["dry_run"]["value"] is True
    for name in ("event_ids", "order_ids", "reasons", "categories", "since", "until"):
        assert "null" in params[name]["schema"]["type"], name  # no "required" star in the form
        assert params[name]["value"] is None


@pytest.mark.parametrize("since", ["yesterday", "2026-03-01", "2026-03-01T10:30:00"])
def test_a_since_that_is_not_an_rfc3339_time_is_refused_with_400(
    live_airflow: LiveAirflow, since: str
) -> None:
    with live_airflow.api("op") as api:
        response = api.post(f"/api/v2/dags/{REPLAY}/dagRuns",
                            json={"logical_date": None, "conf": {"since": since}})  # fmt: skip
        runs = api.get(f"/api/v2/dags/{REPLAY}/dagRuns").json()["dag_runs"]

    assert response.status_code == 400
    assert f"Invalid input for param since: '{since}' is not a 'date-time'" in response.text
    assert all(run["conf"].get("since") != since for run in runs)


def test_a_bad_window_fails_the_run_at_once_without_retrying(live_airflow: LiveAirflow) -> None:
    conf = {"since": "2026-03-02T00:00:00.000Z", "until": "2026-03-01T00:00:00.000Z"}

    run_id = live_airflow.trigger(REPLAY, conf)  # the form's checks pass: 200
    run = live_airflow.wait_run(REPLAY, run_id)

    assert run["state"] == "failed"
    tries = live_airflow.tries(REPLAY, run_id, "replay")
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed")]  # retries=1 unused
    assert live_airflow.task_instances(REPLAY, run_id)["replay"]["max_tries"] == 1
    log = live_airflow.task_log(REPLAY, run_id, "replay")
    assert "parameter until: must be after since (2026-03-02T00:00:00+00:00)" in log


def test_a_replay_logs_no_librdkafka_warnings_and_its_summary_once(
    live_airflow: LiveAirflow,
    live_store: DlqStore,
    seed_dlq: Callable[..., list[int]],
) -> None:
    (event,) = seed_dlq(live_store, [Order("log-check", "Laptop", 150.0)], first_offset=1000)
    live_store.edit(event, {"price": 12.5}, actor="alice")
    live_store.approve([event], actor="alice")

    run_id = live_airflow.trigger(REPLAY, {"event_ids": [event], "dry_run": False, "canary": 0})
    run = live_airflow.wait_run(REPLAY, run_id)

    assert run["state"] == "success"
    assert live_store.get(event).status == "replayed"
    replay = live_airflow.task_log(REPLAY, run_id, "replay").splitlines()
    warnings = [line for line in replay if line.startswith(("warning", "error"))]
    assert warnings == []
    assert not [line for line in replay if "librdkafka" in line or "property" in line]
    summary = live_airflow.task_log(REPLAY, run_id, "summarise")
    assert summary.count("replay summary") == 1
    assert summary.count("| event ") == 1  # the table's header: the table once
    assert re.search(r"\| log-check +\| pending +\| 12\.50 +\| partition 0 offset", summary)
    assert "Returned value was: None" in summary


def test_the_local_airflow_runs_one_task_slot_per_core(live_airflow: LiveAirflow) -> None:
    group = live_airflow.local.proc.pid if live_airflow.local.proc else 0
    listing = subprocess.run(["ps", "-o", "pgid=,args=", "-e"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    workers = [
        line
        for line in listing.splitlines()
        if line.split(None, 1)[0] == str(group) and "LocalExecutor" in line
    ]

    assert len(workers) == parallelism() == max(2, os.cpu_count() or 2)


def test_a_broker_outage_fails_the_drain_within_its_timeout_once_per_try(
    live_airflow: LiveAirflow,
) -> None:
    """Three tries, two seconds apart (the session's task policy shortens the DAG's minute).

    No clock here: each try names the timeout it gave up after, and says so once."""
    timeout_s = 3
    live_airflow.gate.down()
    try:
        run_id = live_airflow.trigger(DRAIN, {"timeout_s": timeout_s})
        run = live_airflow.wait_run(DRAIN, run_id, timeout_s=300)
    finally:
        live_airflow.gate.up()

    assert run["state"] == "failed"
    tries = live_airflow.tries(DRAIN, run_id, "drain")
    assert [t["try_number"] for t in tries] == [1, 2, 3]  # retries=2
    assert {t["state"] for t in tries} == {"failed"}
    for t in tries:
        log = live_airflow.task_log(DRAIN, run_id, "drain", t["try_number"])
        outage = [
            line
            for line in log.splitlines()
            if re.search("Connection refused|brokers are down|cannot reach Kafka", line)
        ]
        assert 1 <= len(outage) <= 2, "\n".join(outage)  # once (librdkafka's first line too)
        assert f"cannot reach Kafka at {live_airflow.gate.address} within {timeout_s} s" in log
