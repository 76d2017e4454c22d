"""One review row per failure, whatever the transport did: copies of a failure fold into
its row (counted), a re-read adds nothing, foreign records stay themselves, and the
migration folds the duplicates an older store already holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from orderproc.clock import utcnow
from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.store import DlqStore
from orderproc.store.engine import open_engine
from orderproc.store.migrate import current, downgrade, upgrade
from orderproc.store.tables import AuditLog, DlqCopy, DlqEvent

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(partitions=2, database_url=db_url, batch_size=3)


def test_copies_of_a_failure_are_one_row_counting_its_copies(
    settings: Settings,
    dead_letter: Callable[..., None],
    make_orders: Callable[..., Any],
    produce_raw: Callable[..., None],
) -> None:
    orders = make_orders(3)
    dead_letter(settings, orders, source_offsets=[10, 11, 12])
    first = run_drain(settings)
    # A consumer killed before its offsets moved dead-letters records 10 and 11 again.
    dead_letter(settings, orders[:2], source_offsets=[10, 11])
    dead_letter(settings, orders[:1], source_offsets=[10])
    produce_raw(settings, [b"foreign", b"foreign"])  # no provenance: each its own failure
    second = run_drain(settings)
    third = run_drain(settings)

    assert (first.inserted, first.copies) == (3, 0)
    assert (second.consumed, second.inserted, second.copies) == (5, 2, 3)
    assert (third.consumed, third.inserted, third.copies, third.duplicates) == (0, 0, 0, 0)
    with open_engine(settings.effective_database_url) as engine, engine.connect() as conn:
        events = conn.execute(select(DlqEvent.order_id, DlqEvent.copies)).all()
        assert sorted(events, key=str) == sorted(
            [("o-0", 3), ("o-1", 2), ("o-2", 1), (None, 1), (None, 1)], key=str
        )
        assert conn.scalar(select(text("count(*)")).select_from(DlqCopy)) == 8  # every record
        actions = conn.scalars(select(AuditLog.action)).all()
        assert sorted(actions).count("copy") == 2  # one per drain batch that added copies


def test_a_crash_between_the_database_and_the_offset_commit_adds_no_copy(
    settings: Settings, dead_letter: Callable[..., None], make_orders: Callable[..., Any]
) -> None:
    dead_letter(settings, make_orders(4))

    def crash(_records: Any) -> None:
        raise RuntimeError("killed after the database commit")

    with pytest.raises(RuntimeError):
        run_drain(settings, after_db_commit=crash)
    again = run_drain(settings)

    assert again.inserted + again.copies == 4 - 3  # the first batch (3) was stored already
    assert again.duplicates == 3
    with open_engine(settings.effective_database_url) as engine:
        rows = DlqStore(engine).list_events()
    assert [e.copies for e in rows] == [1, 1, 1, 1]


def test_the_migration_folds_existing_duplicates(db_url: str) -> None:
    with open_engine(db_url) as engine:
        downgrade(engine, "0001")
        assert current(engine) == "0001"
        now = utcnow()
        base = {"dlq_topic": "orders_dlq", "dlq_partition": 0, "reason": "r",
                "category": "business_rule", "retryable": False, "attempts": 3,
                "drained_at": now, "replay_count": 0, "consumer_group": "g",
                "source_topic": "orders", "source_partition": 1, "order_id": "o-1"}  # fmt: skip
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dlq_events (id, dlq_topic, dlq_partition, dlq_offset, reason, "
                    "category, retryable, attempts, drained_at, replay_count, consumer_group, "
                    "source_topic, source_partition, source_offset, order_id, status) VALUES "
                    "(:id, :dlq_topic, :dlq_partition, :dlq_offset, :reason, :category, "
                    ":retryable, :attempts, :drained_at, :replay_count, :consumer_group, "
                    ":source_topic, :source_partition, :source_offset, :order_id, :status)"
                ),
                [
                    {**base, "id": 1, "dlq_offset": 5, "source_offset": 40, "status": "new"},
                    {**base, "id": 2, "dlq_offset": 9, "source_offset": 40, "status": "approved"},
                    {**base, "id": 3, "dlq_offset": 12, "source_offset": 41, "status": "new"},
                ],
            )
            conn.execute(
                insert(AuditLog.__table__),
                [
                    {"dlq_event_id": i, "action": "drained", "actor": "d", "at": now}
                    for i in (1, 2, 3)
                ],
            )

        upgrade(engine)

        with engine.connect() as conn:
            events = {r.id: r for r in conn.execute(select(DlqEvent))}
            copies = conn.execute(select(DlqCopy.dlq_offset, DlqCopy.event_id)).all()
            trail = conn.execute(select(AuditLog.dlq_event_id, AuditLog.action)).all()
    assert set(events) == {2, 3}  # row 2 is further along in review: it keeps the failure
    assert (events[2].status, events[2].copies) == ("approved", 2)
    assert events[2].failure_key == "g|src:orders:1:40|r0"
    assert sorted(copies) == [(5, 2), (9, 2), (12, 3)]
    assert sorted(trail) == [(2, "drained"), (2, "drained"), (2, "folded"), (3, "drained")]
