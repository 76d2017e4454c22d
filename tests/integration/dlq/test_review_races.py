"""Reviewers racing each other on one row, each interleaving forced, on PostgreSQL and
SQLite: an action taken from a view that is no longer current is refused with a line
naming the change in between, and never applied over the other reviewer's work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, update

from orderproc.dlq.store import DlqStore
from orderproc.errors import ConflictError, ReviewError
from orderproc.models import Order
from orderproc.store.tables import DlqEvent
from tests.support import wait_for_row_lock_waiter

pytestmark = pytest.mark.integration

Seed = Callable[..., list[int]]


@pytest.fixture
def store(engine: Engine) -> DlqStore:
    return DlqStore(engine)


@pytest.fixture
def event(store: DlqStore, seed_dlq: Seed) -> int:
    (event_id,) = seed_dlq(store, [Order("o-1", "Laptop", 150.0)])
    return event_id


@pytest.mark.parametrize(
    "act",
    [
        lambda s, e, seen: s.approve([e], actor="alice", seen={e: seen}),
        lambda s, e, seen: s.reject([e], actor="alice", note="spam", seen={e: seen}),
        lambda s, e, seen: s.edit(e, {"price": 80.0}, actor="alice", seen=seen),
    ],
    ids=["approve", "reject", "edit"],
)
def test_an_action_from_a_view_older_than_an_edit_is_refused_naming_the_edit(
    act: Callable[[DlqStore, int, int], Any], store: DlqStore, event: int
) -> None:
    seen = store.get(event).version  # alice opens the row ...
    store.edit(event, {"price": 90.0}, actor="bob", note="typo")  # ... bob corrects it first

    with pytest.raises(ConflictError) as refused:
        act(store, event, seen)

    said = str(refused.value)
    assert "nothing changed: another change was made to event" in said and "\n" not in said
    assert "edited by bob" in said and "price 150.0 -> 90.0" in said and "reload it" in said
    row = store.get(event)
    assert (row.status, (row.corrected_payload or {})["price"], row.version) == ("new", 90.0, 1)


def test_an_approve_from_a_view_older_than_a_reject_is_refused_naming_the_reject(
    store: DlqStore, event: int
) -> None:
    seen = store.get(event).version
    store.reject([event], actor="bob", note="a real price")

    with pytest.raises(ConflictError, match="rejected by bob"):
        store.approve([event], actor="alice", seen={event: seen})

    assert store.get(event).status == "rejected"


def test_two_edits_at_the_same_instant_the_later_commit_is_refused(
    store: DlqStore, event: int, engine: Engine
) -> None:
    seen = store.get(event).version
    outcome: list[Any] = []
    with engine.connect() as bob:  # bob's edit is written, not yet committed
        tx = bob.begin()
        bob.execute(
            update(DlqEvent)
            .where(DlqEvent.id == event)
            .values(corrected_payload={"orderId": "o-1", "product": "Laptop", "price": 90.0},
                    version=DlqEvent.version + 1)
        )  # fmt: skip
        alice = threading.Thread(
            target=lambda: outcome.append(_attempt(store, event, seen)), daemon=True
        )
        alice.start()  # her update waits for bob's transaction (row or database lock)
        if engine.dialect.name == "postgresql":  # SQLite shows no waiter: its busy wait
            wait_for_row_lock_waiter(engine)  # ends when bob commits

        tx.commit()
    alice.join(60)

    assert len(outcome) == 1 and isinstance(outcome[0], ConflictError), outcome
    assert (store.get(event).corrected_payload or {})["price"] == 90.0  # bob's, not alice's


def _attempt(store: DlqStore, event: int, seen: int) -> Any:
    try:
        return store.edit(event, {"price": 80.0}, actor="alice", seen=seen)
    except ReviewError as exc:
        return exc
