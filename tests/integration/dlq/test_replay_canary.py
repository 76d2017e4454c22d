"""Replays that watch themselves, in one process (what ``orderproc dlq replay`` runs): a
canary, the live consumer's verdict on it, the rest in steps, a pause when replayed orders
fail again. Real broker, the real consumer in a thread, on PostgreSQL and SQLite.

The consumer is the live one (``OrderConsumer``, the ``live_consumer`` fixture): replayed
copies are processed or fail their attempts and are dead-lettered as in production; the
run reads the DLQ itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from sqlalchemy import Engine

from orderproc.clock import utcnow
from orderproc.config import ProcessingGuarantee, RetryMode, Settings
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.replay import ReplayRequest, clients_for, run_replay
from orderproc.dlq.runs import RowOutcome, RunState
from orderproc.dlq.steps import carry_on, replay_watched, start
from orderproc.dlq.store import DlqStore
from orderproc.dlq.summary import run_markdown, run_report
from orderproc.dlq.turn import Clients
from orderproc.errors import HIGH_PRICE_REASON
from orderproc.kafka.clients import replay_producer_config, replay_reader_config

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]


@pytest.fixture
def store(engine: Engine) -> DlqStore:
    return DlqStore(engine)


BOTH_MODES = pytest.mark.parametrize(
    "settings",
    [
        (RetryMode.NON_BLOCKING, ProcessingGuarantee.AT_LEAST_ONCE),
        (RetryMode.BLOCKING, ProcessingGuarantee.EXACTLY_ONCE),
    ],
    ids=["non-blocking-alo", "blocking-eos"],
    indirect=True,
)
"""Both retry modes and both guarantees (the outcomes read ``read_committed``)."""


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], db_url: str
) -> Settings:
    default = (RetryMode.NON_BLOCKING, ProcessingGuarantee.AT_LEAST_ONCE)
    mode, guarantee = getattr(request, "param", default)
    return make_settings(partitions=2, database_url=db_url, max_attempts=2, retry_mode=mode,
                         processing_guarantee=guarantee, instance_id="canary-test")  # fmt: skip


@pytest.fixture
def clients(settings: Settings) -> Clients:
    return clients_for(
        settings,
        producer=lambda: Producer(replay_producer_config(settings)),
        reader=lambda: Consumer(replay_reader_config(settings)),
    )


@pytest.fixture
def approved(
    store: DlqStore, approved_dlq: Helper, make_orders: Helper
) -> Callable[..., list[int]]:
    """``approved(n, corrected=False)``: n expensive orders dead-lettered and approved (with
    their price corrected to 90, which the live consumer takes)."""

    def make(n: int, *, corrected: bool = False) -> list[int]:
        ids: list[int] = approved_dlq(store, make_orders(n), price=90.0 if corrected else None)
        return ids

    return make


@pytest.fixture
def once(settings: Settings, read_all: Helper, headers_of: Helper) -> Callable[[], Counter[str]]:
    """Copies on ``orders`` by lineage (a ``read_committed`` reader): each row at most once."""

    def count() -> Counter[str]:
        copies = Counter(
            headers_of(m)["replay.dlq.offset"] for m in read_all(settings.orders_topic)
        )
        assert set(copies.values()) <= {1}, copies
        return copies

    return count


@BOTH_MODES
def test_uncorrected_orders_pause_after_the_canary_and_the_rest_go_back_to_approved(
    store: DlqStore, settings: Settings, db_url: str, clients: Clients, live_consumer: Helper,
    approved: Callable[..., list[int]], once: Callable[[], Counter[str]], dlq_rows: Helper,
) -> None:  # fmt: skip
    ids = approved(30)
    request = ReplayRequest(max_messages=100, canary="5", outcome_timeout_s=120)

    live_consumer(settings, db_url)
    replay_watched(store, request, clients, replay_id="canary-1", actor="ops")

    report = run_report(store, "canary-1")
    assert report is not None and report.run.state == RunState.PAUSED and report.run.failed
    assert report.run.said == (
        f"paused after the canary: 5 of 5 replayed orders failed again with "
        f"`{HIGH_PRICE_REASON}`; 25 rows returned to approved"
    )
    assert len(once()) == 5  # at most the canary was published
    rows = dlq_rows(store)
    outcomes = Counter(r.outcome for r in report.rows)
    assert outcomes == {RowOutcome.FAILED_AGAIN: 5, RowOutcome.RETURNED: 25}
    for failed in report.failures:
        assert failed.member.note == HIGH_PRICE_REASON
        assert failed.member.trip_topic == settings.dlq_topic  # its next trip, found in the DLQ
    returned = [r.event.id for r in report.rows if r.outcome is RowOutcome.RETURNED]
    assert {rows[i].status for i in returned} == {"approved"}
    assert {rows[i].claimed_by for i in ids} == {None}
    trail = store.audit_trail(returned[0])
    assert trail[-1].action == "returned" and "paused after the canary" in (trail[-1].note or "")
    assert "5 failed again, 25 returned" in run_markdown(report)


def test_corrected_orders_run_to_the_end_in_steps_every_row_processed(
    store: DlqStore, settings: Settings, db_url: str, clients: Clients, live_consumer: Helper,
    approved: Callable[..., list[int]], once: Callable[[], Counter[str]], dlq_rows: Helper,
) -> None:  # fmt: skip
    ids = approved(25, corrected=True)
    request = ReplayRequest(max_messages=100, canary="20%", step_rows=7, outcome_timeout_s=120)

    live_consumer(settings, db_url)
    replay_watched(store, request, clients, replay_id="canary-2", actor="ops")

    report = run_report(store, "canary-2")
    assert report is not None and report.run.state == RunState.FINISHED
    assert not report.run.failed
    assert (report.run.canary, report.run.steps) == (5, 3)  # 5, then 7 + 7 + 6
    assert report.run.said == "finished: 25 of 25 replayed orders processed"
    assert {r.outcome for r in report.rows} == {RowOutcome.PROCESSED}
    assert {dlq_rows(store)[i].status for i in ids} == {"replayed"}
    assert len(once()) == 25


def test_a_canary_whose_outcomes_never_arrive_pauses_at_its_timeout_and_says_so(
    store: DlqStore, clients: Clients, approved: Callable[..., list[int]],
    once: Callable[[], Counter[str]], dlq_rows: Helper,
) -> None:  # fmt: skip
    ids = approved(8)
    request = ReplayRequest(canary="3", outcome_timeout_s=2)
    slept: list[float] = []
    now: list[datetime] = []

    def clock() -> datetime:  # real time when the wait begins, then only what it slept
        now[:] = now or [utcnow()]
        return now[0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)

    # No consumer: nothing ever decides the canary's copies.
    replay_watched(store, request, clients, replay_id="canary-3", actor="ops", sleep=sleep,
                   clock=clock)  # fmt: skip

    report = run_report(store, "canary-3")
    assert report is not None and report.run.state == RunState.PAUSED
    assert report.run.said == (
        "paused after the canary: the outcomes of 3 of 3 replayed orders did not arrive "
        "within 2 s (is the consumer running?); 5 rows returned to approved"
    )
    assert slept == [1.0, 1.0]  # it looked again every second (2 s / 20, at least 1 s)
    assert len(once()) == 3
    assert sorted(r.status for r in dlq_rows(store).values()) == ["approved"] * 5 + ["replayed"] * 3
    assert {dlq_rows(store)[i].claimed_by for i in ids} == {None}


def test_the_command_line_waits_for_its_canary_pauses_and_exits_1_with_the_verdict(
    store: DlqStore, settings: Settings, db_url: str, live_consumer: Helper, run_cli: Helper,
    approved: Callable[..., list[int]], once: Callable[[], Counter[str]],
) -> None:  # fmt: skip
    ids = approved(6)
    live_consumer(settings, db_url)

    done = run_cli(settings, "dlq", "replay", "--publish", "--canary", "2", "--replay-id",
                   "cli-canary", "--outcome-timeout", "120")  # fmt: skip

    said = (
        f"paused after the canary: 2 of 2 replayed orders failed again with "
        f"`{HIGH_PRICE_REASON}`; 4 rows returned to approved"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"orderproc: error: {said}"
    assert "replay cli-canary: paused" in done.stdout and said in done.stdout
    assert len(once()) == 2
    shown = run_cli(settings, "dlq", "show", str(ids[0])).stdout
    assert f"replay outcome: failed again (replay cli-canary): {HIGH_PRICE_REASON}" in shown
    shown = run_cli(settings, "dlq", "show", str(ids[-1])).stdout
    assert "returned" in shown  # its audit trail says the run gave it back


@pytest.mark.parametrize("canary", [2, 0], ids=["canary", "no-canary"])
def test_a_run_waiting_for_its_next_turn_keeps_its_rows_from_another_run_and_publishes_them_once(
    store: DlqStore, settings: Settings, clients: Clients, approved: Callable[..., list[int]],
    once: Callable[[], Counter[str]], dlq_rows: Helper, canary: int,
) -> None:  # fmt: skip
    """Between its two turns a run holds nothing but stays alive: with a canary while its
    outcomes are awaited, without one until the turn that publishes the rest (the DAG's
    next task). Without a canary it was taken for dead and stopped by the other run."""
    ids = approved(6, corrected=True)
    request = ReplayRequest(canary=str(canary), outcome_timeout_s=120)
    start(store, request, clients, replay_id="waiting", actor="ops")  # then it waits

    other = run_replay(store, ReplayRequest(selection=EventFilter(status="approved",
                       ids=tuple(ids))), topic=settings.orders_topic, producer=clients.producer,
                       reader=clients.reader, replay_id="other")  # fmt: skip

    assert other.delivered == []
    reserved = "reserved by run waiting, which has not published it yet"
    assert {i: other.not_taken[i] for i in ids[canary:]} == dict.fromkeys(ids[canary:], reserved)
    assert all(other.not_taken[i].startswith("already replayed by waiting") for i in ids[:canary])
    carry_on(store, clients, replay_id="waiting", actor="ops")  # its next turn goes on
    run = store.run("waiting")  # without a canary it ends now; with one it awaits the steps'
    assert run is not None and run.state == (RunState.RUNNING if canary else RunState.FINISHED)
    assert {dlq_rows(store)[i].replay_id for i in ids} == {"waiting"}
    assert len(once()) == 6
