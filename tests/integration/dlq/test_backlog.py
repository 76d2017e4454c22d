"""The review page's reads of the DLQ store, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from orderproc.dlq.backlog import Sort
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.store import DlqStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(engine: Engine, known_input: Any) -> DlqStore:
    known_input.seed(engine)
    return DlqStore(engine)


def orders(rows: list[Any]) -> list[str | None]:
    return [r.order_id for r in rows]


def test_pages_sort_by_any_offered_column_with_ties_by_id(store: DlqStore) -> None:
    by_failure = store.page(EventFilter(), Sort("failed_at"), size=25)
    by_price = store.page(EventFilter(), Sort("price", descending=True), size=3)
    second = store.page(EventFilter(), Sort("price", descending=True), number=2, size=3)
    past_the_end = store.page(EventFilter(), Sort("id"), number=99, size=3)

    # Failed at: o-8 (0h), o-4 (0.5h), o-6 (1h) ... the undecodable row (drained at 6h) last.
    assert orders(by_failure.rows) == ["o-8", "o-4", "o-6", "o-5", "o-7", "o-9", "o-9", None]
    assert (by_failure.total, by_failure.pages) == (8, 1)
    assert [r.price for r in by_price.rows + second.rows] == [300.0, 225.0, 225.0, 200.0,
                                                              180.0, 150.0]  # fmt: skip
    assert (past_the_end.number, orders(past_the_end.rows)) == (3, ["o-9", "o-9"])
    no_price_last = store.page(EventFilter(), Sort("price"), size=25).rows
    assert no_price_last[-1].price is None and no_price_last[0].price == 120.0
    with pytest.raises(ValueError, match="cannot sort by 'reason; drop table'"):
        store.page(EventFilter(), Sort("reason; drop table"))


def test_filters_are_exact_and_combine(store: DlqStore, known_input: Any) -> None:
    widgets = EventFilter(products=("widget",), status="replayed")
    window = EventFilter(since=known_input.at(1), until=known_input.at(2.5))

    assert orders(store.page(widgets).rows) == ["o-5", "o-9", "o-9"]
    assert orders(store.page(window).rows) == ["o-6", "o-5", "o-7"]
    assert store.count(EventFilter(products=("widg%",))) == 0
    assert store.count(EventFilter(reasons=("' OR 1=1 --",))) == 0


def test_counts_per_status_ignore_the_status_filter(store: DlqStore) -> None:
    assert store.status_counts(EventFilter(status="new")) == {
        "new": 1, "approved": 1, "rejected": 1, "replayed": 4, "parked": 1,
    }  # fmt: skip
    assert store.status_counts(EventFilter(products=("gadget",))) == {
        "new": 0, "approved": 1, "rejected": 0, "replayed": 1, "parked": 0,
    }  # fmt: skip


def test_the_oldest_unresolved_row_and_the_filter_choices(
    store: DlqStore, known_input: Any
) -> None:
    oldest = store.oldest_unresolved()
    choices = store.choices()

    assert oldest is not None and oldest.failed_at == known_input.at(1)  # o-6: o-8 is parked
    assert store.get(oldest.event_id).order_id == "o-6"
    assert choices.reasons == [known_input.high, known_input.decode]  # most frequent first
    assert choices.categories == ["business_rule", "deserialization"]
    assert choices.products == ["widget", "gadget"]
    assert known_input.now - oldest.failed_at == timedelta(hours=24)


def test_an_orders_other_failures_and_the_matching_ids(store: DlqStore) -> None:
    nines = store.page(EventFilter(order_ids=("o-9",))).rows

    assert [r.id for r in store.same_order(nines[0])] == [nines[1].id]
    assert store.same_order(store.page(EventFilter(categories=("deserialization",))).rows[0]) == []
    assert (
        store.matching_ids(EventFilter(status="replayed"), limit=2)
        == sorted(r.id for r in store.page(EventFilter(status="replayed")).rows)[:2]
    )
