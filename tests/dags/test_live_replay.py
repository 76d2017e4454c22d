"""Replays that watch themselves, through a real local Airflow (scheduler, triggerer, task
runners, REST API; ``live_airflow``: once on PostgreSQL, once on the embedded SQLite store),
the real broker and the live consumer as a process (``orderproc consume``).

Each scenario seeds its own orders (ids and source offsets of its own: the session's store
and topics are shared by the tests of the session) and triggers ``orders_dlq_replay`` as
an operator would. About 2.5 minutes per store on an idle 2-core machine (see the README).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine, func, select

from orderproc.config import Settings
from orderproc.dlq.replay import replay_id_for
from orderproc.dlq.runs import RowOutcome, RunState
from orderproc.dlq.store import DlqStore
from orderproc.dlq.summary import run_report
from orderproc.errors import HIGH_PRICE_REASON
from orderproc.models import Order
from orderproc.store.engine import make_engine
from orderproc.store.tables import AuditLog
from tests.support import read_committed, wait_until

if TYPE_CHECKING:
    from tests.live_airflow import LiveAirflow

pytestmark = pytest.mark.integration

REPLAY, DRAIN = "orders_dlq_replay", "orders_dlq_drain"
ROWS = 200
Helper = Callable[..., Any]


@pytest.fixture
def live_store(live_airflow: LiveAirflow) -> Iterator[DlqStore]:
    """The DLQ store the session's Airflow uses."""
    engine: Engine = make_engine(live_airflow.database_url)
    yield DlqStore(engine)
    engine.dispose()


@pytest.fixture
def approved(live_store: DlqStore, approved_dlq: Helper) -> Callable[..., list[int]]:
    """``approved(name, first_offset, corrected=False)``: ROWS expensive orders of their
    own, dead-lettered and approved (with their price corrected to 90)."""

    def make(name: str, first_offset: int, *, corrected: bool = False) -> list[int]:
        orders = [Order(f"{name}-{i}", "Laptop", 150.0) for i in range(ROWS)]
        price = 90.0 if corrected else None
        ids: list[int] = approved_dlq(live_store, orders, first_offset=first_offset, price=price)
        return ids

    return make


@pytest.fixture
def consumer(live_airflow: LiveAirflow, start_worker: Callable[..., Any]) -> Callable[[], Any]:
    """``consumer()``: the live consumer of the session's topics and store, as a process."""
    return lambda: start_worker(live_airflow.settings, "consume")


def copies_of(live_airflow: LiveAirflow, name: str) -> Counter[str]:
    """This scenario's replayed copies on ``orders`` (``read_committed``), by order id:
    a second look, by a reader of our own."""
    settings: Settings = live_airflow.settings
    gate = settings.bootstrap_servers
    found: Counter[str] = Counter()
    for msg in read_committed(gate, settings.orders_topic):
        key = (msg.key() or b"").decode()
        if key.startswith(f"{name}-"):
            found[key] += 1
    return found


def test_uncorrected_orders_pause_after_the_canary_and_the_run_fails_saying_so(
    live_airflow: LiveAirflow,
    live_store: DlqStore,
    approved: Callable[..., list[int]],
    consumer: Callable[[], Any],
) -> None:
    ids = approved("dear", 10_000)
    consumer()

    run_id = live_airflow.trigger(
        REPLAY, {"event_ids": ids, "max_messages": ROWS, "dry_run": False,
                 "outcome_timeout_s": 240},
    )  # fmt: skip
    run = live_airflow.wait_run(REPLAY, run_id, timeout_s=600)

    said = (
        f"paused after the canary: 10 of 10 replayed orders failed again with "
        f"`{HIGH_PRICE_REASON}`; 190 rows returned to approved"
    )
    assert run["state"] == "failed"
    states = {t: ti["state"] for t, ti in live_airflow.task_instances(REPLAY, run_id).items()}
    assert states == {"replay": "success", "await_canary": "success", "publish_rest": "skipped",
                      "await_outcomes": "skipped", "summarise": "failed"}  # fmt: skip
    assert said in live_airflow.task_log(REPLAY, run_id, "summarise")
    copies = copies_of(live_airflow, "dear")
    assert len(copies) == 10 and set(copies.values()) == {1}  # the canary, each once
    rows = {e.id: e for e in live_store.list_events(limit=1000) if e.id in ids}
    assert Counter(e.status for e in rows.values()) == {"approved": 190, "replayed": 10}
    assert {e.claimed_by for e in rows.values()} == {None}
    with live_store.engine.connect() as conn:
        returned = conn.scalar(select(func.count()).select_from(AuditLog).where(
            AuditLog.action == "returned", AuditLog.dlq_event_id.in_(ids),
            AuditLog.note.like(f"%{said}")))  # fmt: skip
    assert returned == 190

    # The run page says it in words and numbers, links the failures, offers to resume.
    with live_airflow.api("op") as api:
        page = html.unescape(api.get(f"/orderproc/runs/{run_id}").text)
        assert said in page and 'id="failures-link"' in page
        assert "Resume: replay the 190 row(s) it gave back" in page
        assert 'id="no-canary"' in page  # "replay without canary", for the one who knows better
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        resumed = api.post(f"/orderproc/runs/{run_id}/resume",
                           data={"csrf_token": token.group(1), "canary": "same"})  # fmt: skip
    assert resumed.status_code == 303, resumed.text
    again = unquote(resumed.headers["location"].rsplit("/runs/", 1)[1])
    returned = sorted(i for i, e in rows.items() if e.status == "approved")
    assert live_airflow.run(REPLAY, again)["conf"]["event_ids"] == returned
    # Nothing was fixed: the new run's canary fails again, and it pauses the same way.
    assert live_airflow.wait_run(REPLAY, again, timeout_s=600)["state"] == "failed"
    assert "10 of 10 replayed orders failed again" in live_airflow.task_log(
        REPLAY, again, "summarise")  # fmt: skip


def test_corrected_orders_run_to_the_end_in_steps_and_the_wait_holds_no_worker_slot(
    live_airflow: LiveAirflow,
    live_store: DlqStore,
    approved: Callable[..., list[int]],
    consumer: Callable[[], Any],
) -> None:
    ids = approved("fixed", 20_000, corrected=True)
    conf = {"event_ids": ids, "max_messages": ROWS, "dry_run": False, "step_rows": 50,
            "outcome_timeout_s": 600}  # fmt: skip

    # No consumer yet: the canary's outcomes cannot arrive, the wait goes on deferred.
    run_id = live_airflow.trigger(REPLAY, conf)
    wait_until(lambda: _state(live_airflow, run_id, "await_canary") == "deferred",
               timeout_s=300, what="the canary's wait to be deferred")  # fmt: skip
    with _one_slot(live_airflow):
        # Every task runs in the default pool, now of one slot: another run gets it.
        drain = live_airflow.trigger(DRAIN, {})
        assert live_airflow.wait_run(DRAIN, drain, timeout_s=300)["state"] == "success"
        assert _state(live_airflow, run_id, "await_canary") == "deferred"  # still waiting
    consumer()  # the verdict arrives: the rest is published in steps
    run = live_airflow.wait_run(REPLAY, run_id, timeout_s=600)

    assert run["state"] == "success", live_airflow.task_log(REPLAY, run_id, "summarise")
    report = run_report(live_store, replay_id_for(run_id))
    assert report is not None and report.run.state == RunState.FINISHED
    assert (report.run.canary, report.run.steps) == (10, 4)  # 10, then 50 + 50 + 50 + 40
    assert report.run.said == f"finished: {ROWS} of {ROWS} replayed orders processed"
    assert Counter(r.outcome for r in report.rows) == {RowOutcome.PROCESSED: ROWS}
    assert {e.status for e in live_store.list_events(limit=1000) if e.id in ids} == {"replayed"}
    copies = copies_of(live_airflow, "fixed")
    assert len(copies) == ROWS and set(copies.values()) == {1}


def test_a_canary_whose_outcomes_never_arrive_pauses_at_its_timeout_and_says_so(
    live_airflow: LiveAirflow, live_store: DlqStore, approved: Callable[..., list[int]]
) -> None:
    ids = approved("unseen", 30_000)

    run_id = live_airflow.trigger(
        REPLAY, {"event_ids": ids, "max_messages": ROWS, "dry_run": False, "canary": "5%",
                 "outcome_timeout_s": 10},
    )  # fmt: skip
    run = live_airflow.wait_run(REPLAY, run_id, timeout_s=600)

    assert run["state"] == "failed"
    said = (
        "paused after the canary: the outcomes of 10 of 10 replayed orders did not arrive "
        "within 10 s (is the consumer running?); 190 rows returned to approved"
    )
    assert said in live_airflow.task_log(REPLAY, run_id, "summarise")
    assert len(copies_of(live_airflow, "unseen")) == 10


def _state(live_airflow: LiveAirflow, run_id: str, task_id: str) -> str | None:
    state = live_airflow.task_instances(REPLAY, run_id)[task_id]["state"]
    return str(state) if state else None


class _one_slot:
    """Airflow's default pool shrunk to one slot (every task of the DAGs runs in it), and
    given its slots back after."""

    def __init__(self, live_airflow: LiveAirflow) -> None:
        self.api = live_airflow.api("admin")
        self.before = 0

    def __enter__(self) -> None:
        pool = self.api.get(POOL).json()
        assert pool["include_deferred"] is False  # Airflow's default: deferred tasks use none
        self.before = int(pool["slots"])
        self._set(1)

    def __exit__(self, *_: object) -> None:
        self._set(self.before)
        self.api.close()

    def _set(self, slots: int) -> None:
        done = self.api.patch(POOL, params={"update_mask": "slots"}, json={"slots": slots})
        assert done.is_success, done.text


POOL = "/api/v2/pools/default_pool"
