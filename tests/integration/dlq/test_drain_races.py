"""Drains racing each other and a replay, each interleaving forced at a named step of the
store's transaction (``Intake.insert_events``: ``read``, ``written``), on PostgreSQL and
SQLite, against the real broker: one row per failure, each copy counted once, nothing
lost, and no run fails."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from orderproc.config import Settings
from orderproc.dlq.drain import DrainResult, run_drain
from orderproc.dlq.replay import ReplayRequest, replay_with_settings
from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.store.tables import AuditLog, DlqCopy, DlqEvent

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]


class Hold:
    """A step seam that holds its run at ``step`` (the first time) until ``go``."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.reached, self.go = threading.Event(), threading.Event()
        self._done = False

    def __call__(self, at: str) -> None:
        if at == self.step and not self._done:
            self._done = True
            self.reached.set()
            assert self.go.wait(120), f"the run held at {at} was never let go"


class Run(threading.Thread):
    """Work on a thread of its own; ``outcome()`` is its result or its error."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work, self.result = work, None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:
            self.result = exc

    def outcome(self) -> Any:
        self.join(180)
        assert not self.is_alive(), "the run did not finish"
        return self.result


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(partitions=2, database_url=db_url, max_attempts=1)


def _counts(engine: Engine) -> tuple[dict[str | None, int], int, Counter[str]]:
    with engine.connect() as conn:
        copies = {o: int(n) for o, n in conn.execute(select(DlqEvent.order_id, DlqEvent.copies))}
        records = int(conn.scalar(select(func.count()).select_from(DlqCopy)) or 0)
        actions = Counter(str(a) for a in conn.scalars(select(AuditLog.action)))
    return copies, records, actions


@pytest.mark.parametrize(
    "first_at, second_at",
    [
        ("written", "read"),  # both read "not stored yet"; the first commits, then the second
        ("read", "read"),  # both read before either writes
    ],
)
def test_two_drains_of_the_same_records_at_once_store_each_failure_once_and_count_copies_once(
    first_at: str,
    second_at: str,
    settings: Settings,
    engine: Engine,
    dead_letter: Helper,
    make_orders: Helper,
) -> None:
    orders = make_orders(4)
    dead_letter(settings, orders, source_offsets=[10, 11, 12, 13])
    dead_letter(settings, orders[:1], source_offsets=[10])  # o-0 reached the DLQ twice
    first_hold = Hold(first_at)
    first = Run(lambda: run_drain(settings, store_step=first_hold, actor="dag"))
    first.start()
    assert first_hold.reached.wait(60)
    second_hold = Hold(second_at)
    second = Run(lambda: run_drain(settings, store_step=second_hold, actor="cli"))
    second.start()
    assert second_hold.reached.wait(60)  # it has read what is stored: nothing yet
    first_hold.go.set()
    if first_at == "written":
        assert first.outcome() is not None  # committed before the second writes
    second_hold.go.set()
    a, b = first.outcome(), second.outcome()

    assert isinstance(a, DrainResult) and isinstance(b, DrainResult), (a, b)
    assert a.inserted + b.inserted == 4
    assert a.copies + b.copies == 1  # o-0's second record, counted by one drain only
    assert a.consumed == b.consumed == 5
    assert a.duplicates + b.duplicates == 5  # what one stored, the other read again
    copies, records, actions = _counts(engine)
    assert copies == {"o-0": 2, "o-1": 1, "o-2": 1, "o-3": 1}
    assert records == 5
    assert (actions["drained"], actions["copy"]) == (4, 1)
    assert run_drain(settings).consumed == 0  # both committed: nothing is read a third time


def test_a_drain_beside_a_running_replay_stores_new_failures_and_late_copies(
    settings: Settings,
    engine: Engine,
    dead_letter: Helper,
    make_orders: Helper,
    read_all: Helper,
    headers_of: Helper,
) -> None:
    orders = make_orders(3)
    dead_letter(settings, orders, source_offsets=[0, 1, 2])
    run_drain(settings)
    store = DlqStore(engine)
    ids = sorted(e.id for e in store.list_events())
    store.approve(ids, actor="alice")
    held = threading.Event()
    go = threading.Event()

    def crash(at: str) -> None:
        if at == "pending":  # the replay's chunk is recorded, its transaction open
            held.set()
            assert go.wait(120)

    replay = Run(lambda: replay_with_settings(settings, ReplayRequest(), replay_id="r-1",
                                              crash=crash))  # fmt: skip
    replay.start()
    assert held.wait(60)
    dead_letter(settings, orders[:1], source_offsets=[0])  # a late copy of a row being replayed
    dead_letter(settings, [Order("new-1", "Laptop", 150.0)], source_offsets=[7])
    drained = run_drain(settings)  # the drain does not wait for the replay, nor fail
    go.set()
    result = replay.outcome()

    assert (drained.inserted, drained.copies) == (1, 1)
    assert not isinstance(result, BaseException), result
    assert sorted(d.event_id for d in result.delivered) == ids
    copies, _, _ = _counts(engine)
    assert copies == {"o-0": 2, "o-1": 1, "o-2": 1, "new-1": 1}
    lineage = Counter(headers_of(m)["replay.dlq.offset"] for m in read_all(settings.orders_topic))
    assert len(lineage) == 3 and set(lineage.values()) == {1}


def test_the_replay_writes_its_delivery_reports_in_row_order_as_the_drain_does(
    engine: Engine, seed_dlq: Helper, make_orders: Helper
) -> None:
    """Two writers that lock rows in one order never wait for each other in a cycle: the
    delivery reports come back in the broker's order (here the later row first), and a
    drain adding copies to the same rows locks them in id order; so must the replay."""
    from sqlalchemy import Update, event

    from orderproc.dlq.claims import Delivered
    from orderproc.dlq.filters import EventFilter
    from orderproc.dlq.lease import Lease

    store = DlqStore(engine)
    lo, hi = seed_dlq(store, make_orders(2))
    store.approve([lo, hi], actor="alice")
    lease = Lease(engine, replay_id="r-1", claimer="r-1#1")
    lease.acquire(0)
    store.claim(EventFilter(status="approved"), lease=lease, limit=2)
    written: list[int] = []

    def seen(_conn: Any, clause: Any, *_args: Any) -> None:
        if isinstance(clause, Update) and clause.table.name == "dlq_events":
            written.append(clause.compile().params["id_1"])  # WHERE id = :id_1

    event.listen(engine, "before_execute", seen)
    try:
        reports = [Delivered(hi, "orders", 1, 0), Delivered(lo, "orders", 0, 0)]
        store.mark_pending(reports, lease=lease)
        store.mark_replayed(reports, lease=lease, actor="replay:r-1")
    finally:
        event.remove(engine, "before_execute", seen)
        lease.release()

    assert written == [lo, hi, lo, hi]


def test_a_claim_does_not_wait_for_a_drain_adding_a_copy_to_the_same_row(
    pg_url: str, seed_dlq: Helper, make_orders: Helper
) -> None:
    """A drain inserting a late copy of a failure holds a key-share lock on its row (the
    foreign key) until it commits, and it adds copies in DLQ order, not id order. A claim
    that took FOR UPDATE waited for it, so with two rows locked in opposite orders
    PostgreSQL ended one of them as a deadlock; FOR NO KEY UPDATE (the lock the claim's
    UPDATE takes anyway) does not wait for it. PostgreSQL only: SQLite has no row locks
    (a writer waits for the whole database)."""
    from sqlalchemy import insert

    from orderproc.clock import utcnow
    from orderproc.dlq.filters import EventFilter
    from orderproc.dlq.lease import Lease
    from orderproc.store.engine import make_engine

    engine = make_engine(pg_url)
    store = DlqStore(engine)
    (eid,) = seed_dlq(store, make_orders(1))
    store.approve([eid], actor="alice")
    lease = Lease(engine, replay_id="r-1", claimer="r-1#1")
    lease.acquire(0)
    drain = engine.connect()
    try:
        with drain.begin():  # the drain's transaction, open until the claim is done
            copy = {"dlq_topic": "orders_dlq", "dlq_partition": 0, "dlq_offset": 10**9,
                    "event_id": eid, "drained_at": utcnow()}  # fmt: skip
            drain.execute(insert(DlqCopy).values(**copy))
            claim = Run(lambda: store.claim(EventFilter(status="approved"), lease=lease,
                                            limit=1))  # fmt: skip
            claim.start()
            claimed = claim.outcome()  # bounded: the claim must not wait for the drain
    finally:
        drain.close()
        lease.release()
        engine.dispose()

    assert [e.id for e in claimed] == [eid]
