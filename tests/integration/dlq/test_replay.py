"""Replaying reviewed DLQ rows to ``orders``: exactly the selected rows, once, with lineage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]
from sqlalchemy import Engine, func, select, text

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.lease import Lease
from orderproc.dlq.replay import ReplayRequest, ReplayResult, run_replay
from orderproc.dlq.store import DlqStore, EventFilter
from orderproc.errors import DeliveryError
from orderproc.kafka.clients import replay_producer_config, replay_reader_config
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.processed import OrderRepository
from orderproc.store.tables import AuditLog, ProcessedOrder
from orderproc.worker.consumer import OrderConsumer

pytestmark = pytest.mark.integration

APPROVED = ReplayRequest()
Helper = Callable[..., Any]


# -- helpers ------------------------------------------------------------------------------


def producer_for(settings: Settings) -> Callable[[], Producer]:
    return lambda: Producer(replay_producer_config(settings))


def replay(
    store: DlqStore, settings: Settings, request: ReplayRequest = APPROVED, **kwargs: Any
) -> ReplayResult:
    kwargs.setdefault("producer", producer_for(settings))
    kwargs.setdefault("reader", lambda: Consumer(replay_reader_config(settings)))
    return run_replay(store, request, topic=settings.orders_topic, **kwargs)


def audits(engine: Engine, action: str) -> int:
    stmt = select(func.count()).select_from(AuditLog).where(AuditLog.action == action)
    with engine.connect() as conn:
        return int(conn.scalar(stmt) or 0)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def store(engine: Engine) -> DlqStore:
    return DlqStore(engine)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(partitions=2, database_url=db_url, max_attempts=1)


# -- tests --------------------------------------------------------------------------------


def test_replays_exactly_the_approved_rows_with_corrections_and_lineage(
    store: DlqStore,
    settings: Settings,
    engine: Engine,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
    headers_of: Helper,
    drain_topic: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(5))
    store.approve(ids[:3], actor="alice", note="fixed upstream")
    store.edit(ids[1], {"price": 42.5}, actor="alice")
    store.reject([ids[3]], actor="alice")

    result = replay(store, settings, replay_id="run-1")

    assert end_offset(settings) == 3  # nothing but the approved rows was published
    msgs = drain_topic(settings.orders_topic, expected=3)
    assert len(msgs) == 3
    got = {SchemalessSerde().decode(m.value()).order_id: m for m in msgs}
    rows = dlq_rows(store)
    assert set(got) == {rows[i].order_id for i in ids[:3]}
    assert SchemalessSerde().decode(got[rows[ids[1]].order_id].value()).price == 42.5
    assert SchemalessSerde().decode(got[rows[ids[0]].order_id].value()).price == 150.0
    for event_id in ids[:3]:
        row, msg = rows[event_id], got[rows[event_id].order_id]
        assert headers_of(msg) == {
            "replay.id": "run-1",
            "replay.count": "1",
            "replay.dlq.topic": "orders_dlq",
            "replay.dlq.partition": "0",
            "replay.dlq.offset": str(row.dlq_offset),
        }
        assert (row.status, row.replay_id, row.replay_count) == ("replayed", "run-1", 1)
        assert (row.replay_partition, row.replay_offset) == (msg.partition(), msg.offset())
        assert row.claimed_by is None
    assert [rows[i].status for i in ids[3:]] == ["rejected", "new"]
    assert audits(engine, "replayed") == 3
    assert len(result.delivered) == 3 and not result.failed


def test_the_consumer_processes_corrections_and_a_second_failure_counts_the_replay(
    store: DlqStore, settings: Settings, engine: Engine, seed_dlq: Helper
) -> None:
    ids = seed_dlq(
        store, [Order("cheap-now", "Laptop", 150.0), Order("still-dear", "Laptop", 150.0)]
    )
    store.approve(ids, actor="alice")
    store.edit(ids[0], {"price": 42.5}, actor="alice")
    replay(store, settings, replay_id="run-7")

    consumer = OrderConsumer(settings, OrderRepository(engine), echo=None)
    stats = consumer.run(max_messages=2, idle_exit_s=10)
    run_drain(settings)

    assert (stats.processed, stats.dead_lettered) == (1, 1)
    with engine.connect() as conn:
        processed = conn.execute(select(ProcessedOrder.order_id, ProcessedOrder.replay_id)).all()
    assert [tuple(r) for r in processed] == [("cheap-now", "run-7")]
    again = store.list_events(EventFilter(status="new", order_ids=("still-dear",)))
    assert len(again) == 1 and again[0].replay_count == 1


def test_dry_run_shows_the_plan_and_changes_nothing(
    store: DlqStore,
    settings: Settings,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
) -> None:
    ids = seed_dlq(store, [*make_orders(3), None])
    store.approve(ids, actor="alice")
    seed_dlq(
        store, [Order("tired", "Laptop", 1.0)], first_offset=50, headers=[("replay.count", b"3")]
    )
    store.approve([max(dlq_rows(store))], actor="alice")
    before = {i: (e.status, e.claimed_by, e.replay_count) for i, e in dlq_rows(store).items()}
    audit_rows = len(store.audit_trail(ids[0])) + len(store.audit_trail(ids[3]))

    def no_producer() -> Producer:
        raise AssertionError("a dry run must not create a producer")

    plan = replay(store, settings, ReplayRequest(dry_run=True), producer=no_producer)

    assert [(p.event_id, p.action) for p in plan.planned] == [
        (ids[0], "publish"),
        (ids[1], "publish"),
        (ids[2], "publish"),
        (ids[3], "reject"),
        (max(before), "park"),
    ]
    after = {i: (e.status, e.claimed_by, e.replay_count) for i, e in dlq_rows(store).items()}
    assert after == before
    assert len(store.audit_trail(ids[0])) + len(store.audit_trail(ids[3])) == audit_rows
    assert end_offset(settings) == 0

    real = replay(store, settings)
    assert [p.action for p in real.planned] == [p.action for p in plan.planned]
    assert sorted(d.event_id for d in real.delivered) == ids[:3]


def test_max_messages_bounds_a_run(
    store: DlqStore,
    settings: Settings,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(5))
    store.approve(ids, actor="alice")

    result = replay(store, settings, ReplayRequest(max_messages=2))

    assert sorted(d.event_id for d in result.delivered) == ids[:2]
    assert end_offset(settings) == 2
    rows = dlq_rows(store)
    assert [rows[i].status for i in ids] == ["replayed"] * 2 + ["approved"] * 3
    assert all(rows[i].claimed_by is None for i in ids)


def test_rows_at_the_replay_cap_are_parked_not_published(
    store: DlqStore,
    settings: Settings,
    engine: Engine,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
) -> None:
    tired = seed_dlq(store, make_orders(2), headers=[("replay.count", b"3")])
    fresh = seed_dlq(store, [Order("fresh", "Laptop", 1.0)], first_offset=10)
    store.approve(tired + fresh, actor="alice")

    result = replay(store, settings, ReplayRequest(max_replays=3))

    rows = dlq_rows(store)
    assert [rows[i].status for i in tired] == ["parked", "parked"]
    assert rows[fresh[0]].status == "replayed"
    assert [d.event_id for d in result.delivered] == fresh
    assert end_offset(settings) == 1
    assert audits(engine, "parked") == 2
    assert "replay cap reached" in (store.audit_trail(tired[0])[-1].note or "")


def test_rows_without_a_valid_order_are_rejected(
    store: DlqStore, settings: Settings, seed_dlq: Helper, dlq_rows: Helper, end_offset: Helper
) -> None:
    (broken,) = seed_dlq(store, [None])
    store.approve([broken], actor="alice")

    result = replay(store, settings)

    assert dlq_rows(store)[broken].status == "rejected"
    assert result.delivered == [] and end_offset(settings) == 0
    trail = store.audit_trail(broken)
    assert trail[-1].action == "rejected" and "not replayable" in (trail[-1].note or "")


def test_a_broker_that_refuses_the_copies_fails_the_run_and_leaves_the_rows_replayable(
    store: DlqStore,
    settings: Settings,
    engine: Engine,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
    admin: Any,
) -> None:
    ids = seed_dlq(store, make_orders(3))
    store.approve(ids, actor="alice")
    orders = ConfigResource(ResourceType.TOPIC, settings.orders_topic)

    def set_max_bytes(value: str) -> None:
        orders.set_config("max.message.bytes", value)
        admin.alter_configs([orders])[orders].result(timeout=30)

    # Every copy (an order plus lineage headers) is refused; a transaction marker still fits
    # (with less room the broker could not even write the abort marker).
    set_max_bytes("120")
    with pytest.raises(DeliveryError, match="3 of 3 replayed records were not published"):
        replay(store, settings)

    rows = dlq_rows(store)
    assert [(rows[i].status, rows[i].claimed_by, rows[i].replay_pending) for i in ids] == [
        ("approved", None, False)
    ] * 3
    assert audits(engine, "replayed") == 0
    set_max_bytes("1048588")
    retried = replay(store, settings)  # a later run takes them
    assert sorted(d.event_id for d in retried.delivered) == ids
    assert end_offset(settings) == 3


def test_an_unreachable_broker_fails_before_anything_is_claimed(
    store: DlqStore,
    settings: Settings,
    seed_dlq: Helper,
    make_orders: Helper,
    closed_port: int,
    dlq_rows: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(2))
    store.approve(ids, actor="alice")
    conf = {**replay_producer_config(settings), "bootstrap.servers": f"127.0.0.1:{closed_port}"}

    with pytest.raises(DeliveryError, match="cannot start the replay's transactions"):
        replay(store, settings, producer=lambda: Producer(conf), timeout_s=3)

    assert all(dlq_rows(store)[i].claimed_by is None for i in ids)


def test_the_rate_limit_spaces_records_on_the_injected_clock(
    store: DlqStore, settings: Settings, seed_dlq: Helper, make_orders: Helper
) -> None:
    ids = seed_dlq(store, make_orders(4))
    store.approve(ids, actor="alice")
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        now[0] += seconds

    result = replay(
        store, settings, ReplayRequest(rate_per_sec=2), clock=lambda: now[0], sleep=sleep
    )

    assert sleeps == [0.5, 0.5, 0.5]
    assert len(result.delivered) == 4


def test_a_claim_waits_for_a_reviewers_change_in_flight_and_takes_what_still_matches(
    pg_engine: Engine, seed_dlq: Helper, make_orders: Helper
) -> None:
    store = DlqStore(pg_engine)
    ids = seed_dlq(store, make_orders(4))
    store.approve(ids, actor="alice")
    lease = Lease(pg_engine, replay_id="b", claimer="b")
    lease.acquire(0)
    claimed: list[int] = []

    with pg_engine.connect() as reviewer:  # a rejection written, not yet committed
        tx = reviewer.begin()
        reviewer.execute(
            text("UPDATE dlq_events SET status = 'rejected' WHERE id = :id"), {"id": ids[0]}
        )
        worker = threading.Thread(
            target=lambda: claimed.extend(
                e.id for e in store.claim(EventFilter(status="approved"), lease=lease, limit=4)
            )
        )
        worker.start()
        waiting = text(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
        )
        with pg_engine.connect() as look:
            while not look.scalar(waiting):  # the claim waits for the reviewer (bounded)
                assert worker.is_alive(), "the claim did not wait for the row lock"
                look.rollback()
        tx.commit()
    worker.join(timeout=30)
    lease.release()

    assert claimed == ids[1:]  # not the row the reviewer rejected meanwhile, and none skipped


class StopsAfter:
    """A real producer that fails on the n-th record, like a task killed half way."""

    def __init__(self, inner: Producer, n: int) -> None:
        self.inner, self.n = inner, n

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.n -= 1
        if self.n == 0:
            raise RuntimeError("task killed")
        self.inner.produce(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_run_stopped_half_way_commits_nothing_of_its_chunk_and_a_rerun_publishes_once(
    store: DlqStore,
    settings: Settings,
    engine: Engine,
    seed_dlq: Helper,
    make_orders: Helper,
    dlq_rows: Helper,
    end_offset: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(4))
    store.approve(ids, actor="alice")
    real = producer_for(settings)

    with pytest.raises(RuntimeError, match="task killed"):
        replay(store, settings, producer=lambda: StopsAfter(real(), 3))

    rows = dlq_rows(store)
    assert [rows[i].status for i in ids] == ["approved"] * 4  # two were sent, none committed
    assert all(rows[i].claimed_by is None and not rows[i].replay_pending for i in ids)
    assert audits(engine, "replayed") == 0
    rerun = replay(store, settings)  # fences the stopped producer: its two copies are aborted
    assert sorted(d.event_id for d in rerun.delivered) == ids
    assert end_offset(settings) == 4  # each row once, as a read_committed consumer sees it


def test_a_retry_takes_over_the_claims_of_an_attempt_that_died(
    store: DlqStore,
    settings: Settings,
    seed_dlq: Helper,
    make_orders: Helper,
    end_offset: Helper,
    dlq_rows: Helper,
) -> None:
    ids = seed_dlq(store, make_orders(3))
    store.approve(ids, actor="alice")
    attempt = Lease(store.engine, replay_id="run-1", claimer="run-1#attempt-1")
    attempt.acquire(0)
    held = store.claim(APPROVED.selection, lease=attempt, limit=10)
    assert sorted(e.id for e in held) == ids
    attempt.drop_lock()  # the attempt's process died holding its claims: its lock went with it

    only_one = ReplayRequest(selection=EventFilter(status="approved", ids=(ids[0],)))
    second_attempt = replay(store, settings, only_one, replay_id="run-1", wait=_no_wait)

    assert [d.event_id for d in second_attempt.delivered] == ids[:1]
    assert end_offset(settings) == 1
    # The rows it was not asked for are free again too: nothing stays claimed by the dead.
    assert {dlq_rows(store)[i].claimed_by for i in ids} == {None}
    store.edit(ids[1], {"price": 1.0}, actor="alice")  # a reviewer may act on them


def _no_wait(_seconds: float) -> None:
    raise AssertionError("the lease of a dead attempt is free: nothing to wait for")
