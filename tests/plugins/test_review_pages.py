"""What an operator sees and does on the review page: the backlog, one failure in full,
review actions under their own name, bulk actions, and the replay's preview."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import update

from orderproc.clock import utcnow
from orderproc.dlq.envelope import event_row
from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.records import Record
from orderproc.store.tables import DlqEvent

if TYPE_CHECKING:
    from tests.plugins.conftest import Review

pytestmark = pytest.mark.integration

Seed = Callable[..., list[int]]
ROW = re.compile(r'<tr id="row-(\d+)"')


def shown(page: str) -> list[int]:
    """The ids of the backlog rows on a page, in order."""
    return [int(i) for i in ROW.findall(page)]


def text(page: str) -> str:
    """A page's words: tags out, entities decoded, blanks folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_backlog_filters_sorts_pages_and_counts(
    review: Review, store: DlqStore, seed_dlq: Seed
) -> None:
    laptops = seed_dlq(store, [Order(f"l-{i}", "Laptop", 150.0 + i) for i in range(3)])
    phone = seed_dlq(store, [Order("p-0", "Phone", 900.0)], first_offset=10)
    junk = seed_dlq(store, [None], first_offset=20)
    store.approve([laptops[0]], actor="alice")
    with store.engine.begin() as conn:  # the laptops failed an hour, two, three hours ago
        for hours, event in zip((3, 2, 1), laptops, strict=True):
            conn.execute(update(DlqEvent).where(DlqEvent.id == event)
                         .values(dead_lettered_at=utcnow() - timedelta(hours=hours)))  # fmt: skip

    everything = review.get("/orderproc/").text
    laptops_by_price = review.get("/orderproc/", params={"product": "Laptop", "sort": "price",
                                                         "dir": "desc"}).text  # fmt: skip
    new_only = review.get("/orderproc/", params={"status": "new", "product": "Laptop"}).text
    undecodable = review.get("/orderproc/", params={"category": "deserialization"}).text
    page_two = review.get("/orderproc/", params={"size": 25, "page": 2}).text

    assert shown(everything) == [*laptops, *phone, *junk]  # oldest failure first
    assert shown(laptops_by_price) == laptops[::-1]
    assert shown(new_only) == laptops[1:]
    assert shown(undecodable) == junk
    assert shown(page_two) == [*laptops, *phone, *junk]  # past the end: the last page
    words = text(new_only)
    assert "new 2" in words and "approved 1" in words  # per status, for the other filters
    assert "oldest unresolved: 3h 0m" in text(everything)  # laptops[0], approved, not replayed
    assert f'href="/orderproc/events/{laptops[0]}"' in everything


def test_a_failure_that_arrived_twice_is_one_row_with_two_copies(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    (event,) = seed_dlq(store, make_orders(1))
    first = store.get(event)
    again = Record("orders_dlq", 0, 77, first.message_key.encode(), first.raw_value, [])
    store.insert_events([event_row(again, drained_at=utcnow())], actor="drain")

    backlog = review.get("/orderproc/").text
    detail = text(review.get(f"/orderproc/events/{event}").text)

    assert shown(backlog) == [event]
    assert 'title="this failure arrived 2 times">\u00d72' in backlog  # x2
    assert "DLQ records (2 copies of this failure)" in detail
    assert "orders_dlq 0 77" in detail


def test_the_detail_page_shows_the_failure_in_full(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    (order,) = seed_dlq(store, make_orders(1))
    (junk,) = seed_dlq(store, [None], first_offset=5)
    store.edit(order, {"price": 42.5}, actor="alice", note="typo")

    page = review.get(f"/orderproc/events/{order}").text
    words = text(page)
    raw = review.get(f"/orderproc/events/{junk}").text
    missing = review.get("/orderproc/events/999999", headers={"Accept": "text/html"})

    assert "orderId o-0 —" not in words
    assert re.search(r'id="orig-price">150\.0<', page) and re.search(r'id="fix-price">42\.5<', page)
    assert "class BusinessRuleError" in words and "category business_rule" in words
    assert "attempts 3" in words and "topic [partition] @ offset orders [0] @ 0" in words
    assert "consumer group g" in words and '"failed_order"' in html.unescape(page)
    assert "replayed before this failure 0 time(s)" in words
    assert "edited alice typo" in words and "drained test-drain" in words
    assert 'id="raw-hex">ff<' in raw and 'id="raw-base64">/w==<' in raw
    assert "The order did not decode" in raw
    assert missing.status_code == 404 and "no DLQ event with id 999999" in missing.text


def test_review_actions_are_audited_under_the_acting_airflow_user(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    edited, approved, rejected = seed_dlq(store, make_orders(3))

    saved = review.act(f"/orderproc/events/{edited}/edit", {"price": "42.5", "note": "typo"})
    ok = review.act(f"/orderproc/events/{approved}/approve", {"note": "fine"})
    no_note = review.act(f"/orderproc/events/{rejected}/reject", {"note": " "}, user="admin")
    refused = review.act(f"/orderproc/events/{rejected}/reject", {"note": "spam"}, user="admin")
    again = review.act(f"/orderproc/events/{approved}/approve")

    assert saved.status_code == ok.status_code == refused.status_code == 303
    assert saved.headers["location"] == f"/orderproc/events/{edited}?done=edited"
    assert "Correction saved" in review.get(saved.headers["location"]).text
    assert store.get(edited).corrected_payload == {"orderId": "o-0", "product": "Laptop",
                                                   "price": 42.5}  # fmt: skip
    assert (store.get(edited).price, store.get(edited).status) == (150.0, "new")  # kept
    assert no_note.status_code == 400 and "a note is required" in no_note.text
    assert again.status_code == 400
    assert "cannot approve, nothing changed: event" in html.unescape(again.text)
    trail = {e: [(a.action, a.actor, a.note) for a in store.audit_trail(e)][1:]
             for e in (edited, approved, rejected)}  # fmt: skip
    assert trail == {
        edited: [("edited", "op", "typo")],
        approved: [("approved", "op", "fine")],
        rejected: [("rejected", "admin", "spam")],
    }


def test_bulk_actions_take_the_ticked_rows_or_every_new_row_the_filters_select(
    review: Review, store: DlqStore, seed_dlq: Seed
) -> None:
    laptops = seed_dlq(store, [Order(f"l-{i}", "Laptop", 150.0) for i in range(3)])
    phones = seed_dlq(store, [Order(f"p-{i}", "Phone", 150.0) for i in range(2)], first_offset=10)

    by_filter = review.act("/orderproc/bulk", {"action": "approve", "product": "Laptop"})
    ticked = review.act("/orderproc/bulk", {"action": "reject", "event_id": phones[:1],
                                            "note": "test order"}, user="admin")  # fmt: skip
    unnoted = review.act("/orderproc/bulk", {"action": "reject", "event_id": phones[1:]})

    assert by_filter.status_code == 303
    assert by_filter.headers["location"] == "/orderproc/?product=Laptop&done=bulk-approved&n=3"
    assert "Approved 3 row(s)." in review.get(by_filter.headers["location"]).text
    assert ticked.status_code == 303 and unnoted.status_code == 400
    statuses = {e: store.get(e).status for e in laptops + phones}
    assert statuses == {**dict.fromkeys(laptops, "approved"), phones[0]: "rejected",
                        phones[1]: "new"}  # fmt: skip
    assert {a.actor for e in laptops for a in store.audit_trail(e)[1:]} == {"op"}
    assert store.audit_trail(phones[0])[-1].actor == "admin"


def test_the_preview_is_the_replays_own_dry_run_and_changes_nothing(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    fixed, tired, waiting = seed_dlq(store, make_orders(3))
    store.edit(fixed, {"price": 42.5}, actor="alice")
    store.approve([fixed, tired], actor="alice")
    with store.engine.begin() as conn:
        conn.execute(update(DlqEvent).where(DlqEvent.id == tired).values(replay_count=3))
    before = {e: (store.get(e).status, store.get(e).claimed_by) for e in (fixed, tired, waiting)}

    page = review.get("/orderproc/replay/preview").text
    words = text(page)

    assert re.findall(r'<tr id="plan-(\d+)" class="act-(\w+)"', page) == [
        (str(fixed), "publish"),
        (str(tired), "park"),
    ]
    assert '{"orderId": "o-0", "price": 42.5, "product": "Laptop"}' in html.unescape(page)
    assert "replay.count=1" in words and "replay.dlq.offset=0" in words
    assert "replay cap reached (3 of 3)" in words
    assert re.findall(r'name="event_id" value="(\d+)"', page) == [str(fixed), str(tired)]
    assert {e: (store.get(e).status, store.get(e).claimed_by) for e in before} == before


VERSION_INPUT = re.compile(r'name="version" value="(\d+)"')
TICK = re.compile(r'name="event_id" value="(\d+@\d+)"')


def test_an_action_from_a_stale_page_is_refused_naming_the_change_and_the_page_reloads(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    (event,) = seed_dlq(store, make_orders(1))
    opened = review.get(f"/orderproc/events/{event}").text  # op looks at the failure ...
    (version,) = set(VERSION_INPUT.findall(opened))
    store.edit(event, {"price": 90.0}, actor="bob")  # ... while bob corrects it elsewhere

    approve = review.act(f"/orderproc/events/{event}/approve", {"version": version})
    edit = review.act(f"/orderproc/events/{event}/edit", {"version": version, "price": "80"})

    for answer in (approve, edit):
        assert answer.status_code == 409
        said = text(answer.text)
        assert "another change was made to event" in said and "edited by bob" in said
        assert "price 150.0 -> 90.0" in said and "Reload" in said
        assert 'id="fix-price">90.0<' in answer.text  # the page shows the event as it is now
    row = store.get(event)
    assert (row.status, row.corrected_payload["price"], row.version) == ("new", 90.0, 1)
    assert [a.action for a in store.audit_trail(event)][1:] == ["edited"]  # nothing over it


def test_a_bulk_action_takes_the_rows_still_as_shown_and_lists_the_others_and_why(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    same, rejected, edited, claimed = seed_dlq(store, make_orders(4))
    ticks = TICK.findall(review.get("/orderproc/?status=new").text)
    assert sorted(int(t.split("@")[0]) for t in ticks) == [same, rejected, edited, claimed]
    store.reject([rejected], actor="bob", note="test order")  # meanwhile, elsewhere
    store.edit(edited, {"price": 90.0}, actor="carol")
    with store.engine.begin() as conn:
        conn.execute(update(DlqEvent).where(DlqEvent.id == claimed).values(claimed_by="r#1"))

    answer = review.act("/orderproc/bulk", {"action": "approve", "event_id": ticks})

    assert answer.status_code == 200
    said = text(answer.text)
    assert "Approved 1 row(s)." in said and "Skipped 3 row(s):" in said
    assert f"{rejected} : another change was made to event {rejected}: rejected by bob" in said
    assert f"{edited} : another change was made to event {edited}: edited by carol" in said
    assert f"{claimed} : event {claimed} is claimed by replay r#1, which has ended" in said
    assert [store.get(e).status for e in (same, rejected, edited, claimed)] == [
        "approved",
        "rejected",
        "new",
        "new",
    ]
