"""``orders_dlq_replay`` run with ``dag.test()`` against the real broker and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Engine

from orderproc.clock import Pacer
from orderproc.config import Settings
from orderproc.dlq.store import DlqStore
from orderproc.errors import HIGH_PRICE_REASON
from orderproc.models import Order
from orderproc.serde import SchemalessSerde

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]

DAG_ID = "orders_dlq_replay"
NO_CANARY = {"canary": 0}
"""No consumer runs in these tests: a run with a canary would wait for its outcomes."""


@pytest.fixture
def store(engine: Engine) -> DlqStore:
    return DlqStore(engine)


def test_the_trigger_form_has_the_selection_and_throttle_params(
    load_dag: Callable[[str], Any],
) -> None:
    dag = load_dag(DAG_ID)
    params = dag.params.dump()
    schema = {k: dag.params.get_param(k).schema for k in params}

    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: manual only
    assert params["status"] == "approved" and schema["status"]["enum"] == ["approved"]
    assert schema["reasons"]["examples"]
    assert "business_rule" in schema["categories"]["examples"]
    for optional in ("event_ids", "order_ids", "reasons", "categories"):
        # "null" in the type: no "required" star in the form, and empty is None, not []
        assert schema[optional]["type"] == ["null", "array"] and params[optional] is None
    assert schema["event_ids"]["items"] == {"type": "integer", "minimum": 1}
    assert schema["since"]["type"] == ["null", "string"]
    assert schema["since"]["format"] == "date-time"
    assert (params["max_messages"], params["rate_per_sec"], params["dry_run"]) == (100, 0, True)
    assert params["max_replays"] == 3
    assert (params["canary"], params["pause_at_percent"], params["pause_fails_run"]) == (
        "10", 50.0, True)  # fmt: skip
    chain = ["replay", "await_canary", "publish_rest", "await_outcomes", "summarise"]
    assert set(dag.task_dict) == set(chain)
    for before, after in itertools.pairwise(chain):
        assert before in dag.task_dict[after].upstream_task_ids
    assert dag.task_dict["summarise"].trigger_rule == "all_done"  # it tells how any run ended


def test_replays_the_approved_rows_and_parks_the_tired_ones(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    store: DlqStore,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
    headers_of: Helper,
    drain_topic: Helper,
) -> None:
    approved = seed_dlq(store, make_orders(2))
    untouched = seed_dlq(store, [Order("not-reviewed", "Laptop", 150.0)], first_offset=10)
    tired = seed_dlq(store, [Order("tired", "Laptop", 150.0)], first_offset=20,
                 headers=[("replay.count", b"3")])  # fmt: skip
    store.approve(approved + tired, actor="alice")
    store.edit(approved[0], {"price": 42.5}, actor="alice")

    run = load_dag(DAG_ID).test(run_conf={"dry_run": False, **NO_CANARY})

    assert run.state == "success"
    assert end_offset(dag_settings) == 2
    msgs = drain_topic(dag_settings.orders_topic, expected=2)
    orders = [SchemalessSerde().decode(m.value()) for m in msgs]
    prices = {order.order_id: order.price for order in orders}
    assert prices == {"o-0": 42.5, "o-1": 150.0}
    assert {headers_of(m)["replay.id"] for m in msgs} == {run.run_id}
    rows = dlq_rows(store)
    assert [rows[i].status for i in approved] == ["replayed", "replayed"]
    assert rows[untouched[0]].status == "new"
    assert rows[tired[0]].status == "parked"
    by = run.triggering_user_name  # the user who triggered the run ("dag_test" here)
    assert store.audit_trail(approved[0])[-1].actor == f"airflow:{run.run_id} by {by}"


def test_a_run_is_a_dry_run_unless_asked_otherwise_and_changes_nothing(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    store: DlqStore,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(3))
    store.approve(ids, actor="alice")
    before = {i: (e.status, e.claimed_by, e.replay_count) for i, e in dlq_rows(store).items()}

    run = load_dag(DAG_ID).test()

    assert run.state == "success"
    after = {i: (e.status, e.claimed_by, e.replay_count) for i, e in dlq_rows(store).items()}
    assert after == before
    assert [a.action for a in store.audit_trail(ids[0])] == ["drained", "approved"]
    assert end_offset(dag_settings) == 0


def test_max_messages_and_a_second_run_never_republish_a_row(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    store: DlqStore,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
    headers_of: Helper,
    drain_topic: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(3))
    store.approve(ids, actor="alice")
    dag = load_dag(DAG_ID)

    first = dag.test(run_conf={"max_messages": 2, "dry_run": False, **NO_CANARY})
    assert first.state == "success"
    assert end_offset(dag_settings) == 2
    second = dag.test(run_conf={"dry_run": False, **NO_CANARY})

    assert second.state == "success"
    assert end_offset(dag_settings) == 3
    msgs = drain_topic(dag_settings.orders_topic, expected=3)
    assert sorted(headers_of(m)["replay.dlq.offset"] for m in msgs) == ["0", "1", "2"]
    rows = dlq_rows(store)
    assert [rows[i].replay_id for i in ids] == [first.run_id, first.run_id, second.run_id]


def test_the_rate_param_drives_the_pacer(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    store: DlqStore,
    monkeypatch: pytest.MonkeyPatch,
    seed_dlq: Helper,
    make_orders: Helper,
    end_offset: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(3))
    store.approve(ids, actor="alice")
    sleeps: list[float] = []

    class FakeClockPacer(Pacer):
        """The real pacer on a clock that only moves when it sleeps."""

        def __init__(self, rate_per_sec: float, **_: Any) -> None:
            now = [0.0]

            def sleep(seconds: float) -> None:
                sleeps.append(round(seconds, 6))
                now[0] += seconds

            super().__init__(rate_per_sec, clock=lambda: now[0], sleep=sleep)

    # dag.test() runs the task in this process, so the patch reaches it.
    monkeypatch.setattr("orderproc.dlq.turn.Pacer", FakeClockPacer)

    run = load_dag(DAG_ID).test(run_conf={"rate_per_sec": 4, "dry_run": False, **NO_CANARY})

    assert run.state == "success"
    assert sleeps == [0.25, 0.25]
    assert end_offset(dag_settings) == 3


def test_a_bad_param_is_refused_before_anything_runs(
    load_dag: Callable[[str], Any], dag_settings: Settings, end_offset: Helper
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    for bad in ({"status": "replayed"}, {"since": "yesterday"}, {"event_ids": [0]}):
        with pytest.raises(ParamValidationError):
            load_dag(DAG_ID).test(run_conf={**bad, "dry_run": False})
    assert end_offset(dag_settings) == 0


def test_only_the_event_ids_asked_for_are_replayed(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    store: DlqStore,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(3))
    store.approve(ids, actor="alice")

    run = load_dag(DAG_ID).test(run_conf={"event_ids": [ids[1]], "dry_run": False, **NO_CANARY})

    assert run.state == "success"
    assert end_offset(dag_settings) == 1
    assert [r.status for r in (dlq_rows(store)[i] for i in ids)] == ["approved", "replayed",
                                                                     "approved"]  # fmt: skip


# -- a run that watches itself: the canary awaited deferred, the trigger run in line ---------


def test_uncorrected_orders_pause_after_the_canary_and_the_run_fails_saying_so(
    load_dag: Callable[[str], Any],
    dag_settings: Settings,
    db_url: str,
    store: DlqStore,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
    live_consumer: Helper,
    webhook: Any,
) -> None:
    ids = seed_dlq(store, make_orders(12))
    store.approve(ids, actor="alice")
    live_consumer(dag_settings, db_url)

    conf = {"dry_run": False, "canary": 4, "outcome_timeout_s": 60}
    run = load_dag(DAG_ID).test(run_conf=conf)

    said = (
        f"paused after the canary: 4 of 4 replayed orders failed again with "
        f"`{HIGH_PRICE_REASON}`; 8 rows returned to approved"
    )
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"replay": "success", "await_canary": "success", "publish_rest": "skipped",
                      "await_outcomes": "skipped", "summarise": "failed"}  # fmt: skip
    (told,) = webhook.texts()  # the verdict, and where the run page shows the failures
    assert told.startswith(
        f"orderproc: {DAG_ID}.summarise failed after 1 tries (run {run.run_id}): {said} "
        f"(the run: http://"
    )
    assert told.endswith(f"/orderproc/runs/{quote(run.run_id, safe='')})")
    assert end_offset(dag_settings) == 4
    assert sorted(r.status for r in dlq_rows(store).values() if r.id in ids) == (
        ["approved"] * 8 + ["replayed"] * 4)  # fmt: skip
