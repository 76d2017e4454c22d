"""The review page's forms, tokens and replay request, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest

from orderproc.airflow.review import (
    BULK_LIMIT,
    BacklogQuery,
    csrf_key,
    csrf_token,
    csrf_valid,
    edit_changes,
    note_of,
    raw_bytes,
    replay_conf,
)
from orderproc.errors import ConfigError, ReviewError
from orderproc.store.tables import DlqEvent

pytestmark = pytest.mark.unit

ORDER = {"orderId": "o-1", "product": "Laptop", "price": 150.0}


def test_a_query_string_becomes_an_exact_filter_a_sort_and_a_page() -> None:
    query = BacklogQuery.parse(
        {"status": "new", "product": " Laptop ", "reason": "Simulated error: high price",
         "since": "2026-03-01T10:00", "sort": "price", "dir": "desc", "page": "2", "size": "25"}
    )  # fmt: skip

    flt = query.event_filter()
    assert (flt.status, flt.products, flt.reasons) == (
        "new",
        ("Laptop",),
        ("Simulated error: high price",),
    )
    assert flt.since == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # the form's time is UTC
    assert (query.order().key, query.order().descending) == ("price", True)
    assert (query.page, query.size) == (2, 25)
    assert parse_qs(query.link(page=3)) == {
        "status": ["new"], "product": ["Laptop"], "reason": ["Simulated error: high price"],
        "since": ["2026-03-01T10:00:00+00:00"], "sort": ["price"], "dir": ["desc"],
        "page": ["3"], "size": ["25"],
    }  # fmt: skip
    assert BacklogQuery.parse({}).link() == ""  # defaults stay out of the address


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "done"}, "parameter status: must be one of new, approved"),
        ({"category": "x"}, "parameter category: must be one of deserialization"),
        ({"sort": "id; drop table"}, "parameter sort: must be one of failed_at, id"),
        ({"dir": "sideways"}, "parameter dir: must be one of asc, desc"),
        ({"size": "1000"}, "parameter size: must be one of 25, 50, 100, 200"),
        ({"page": "0"}, "parameter page: Input should be greater than or equal to 1"),
        ({"since": "soon"}, "parameter since: Input should be a valid datetime"),
        ({"product": "x" * 201}, "parameter product: String should have at most 200"),
    ],
)
def test_a_bad_filter_is_one_line_naming_it(params: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        BacklogQuery.parse(params)

    assert str(info.value).startswith(message)


def test_an_edit_keeps_the_fields_that_change_typed_by_the_schema() -> None:
    assert edit_changes({"price": "42.5", "product": "Laptop", "orderId": ""}, ORDER) == {
        "price": 42.5
    }
    assert edit_changes({"orderId": "o-2", "product": "P", "price": "3"}, None) == {
        "orderId": "o-2", "product": "P", "price": 3.0,
    }  # fmt: skip
    assert edit_changes({"price": "42", "note": "x", "extra": "ignored"}, ORDER) == {"price": 42.0}
    with pytest.raises(ReviewError, match="nothing to change"):
        edit_changes({"price": "150", "product": "Laptop"}, ORDER)
    with pytest.raises(ReviewError, match="price must be a float, got 'cheap'"):
        edit_changes({"price": "cheap"}, ORDER)


def test_notes_are_trimmed_bounded_and_required_to_reject() -> None:
    assert note_of("  typo  ") == "typo" and note_of("") is None and note_of(None) is None
    with pytest.raises(ReviewError, match="a note is required"):
        note_of("   ", required=True)
    with pytest.raises(ReviewError, match="at most 2000"):
        note_of("x" * 2001)


def test_csrf_tokens_are_bound_to_the_user_the_key_and_eight_hours() -> None:
    key, now = csrf_key("secret"), 1_800_000_000.0
    token = csrf_token(key, "op", now=now)

    assert csrf_valid(key, "op", token, now=now + 8 * 3600)
    assert not csrf_valid(key, "op", token, now=now + 8 * 3600 + 1)
    assert csrf_valid(key, "op", token, now=now - 10)  # another server's clock, a bit ahead
    assert not csrf_valid(key, "op", token, now=now - 61)  # from the future
    assert not csrf_valid(key, "admin", token, now=now)
    assert not csrf_valid(csrf_key("another secret"), "op", token, now=now)
    stamp, _, mac = token.partition(".")
    assert not csrf_valid(key, "op", f"{int(stamp) + 1}.{mac}", now=now)
    for broken in (None, "", ".", "x.y", stamp, f"{stamp}.", "-1." + mac):
        assert not csrf_valid(key, "op", broken, now=now)


def test_a_replay_request_names_exactly_the_previewed_rows() -> None:
    assert replay_conf([5, 3, 5]) == {
        "status": "approved", "event_ids": [3, 5], "max_messages": 2, "dry_run": False,
    }  # fmt: skip
    with pytest.raises(ReviewError, match="nothing to replay"):
        replay_conf([])
    with pytest.raises(ReviewError, match=f"at most {BULK_LIMIT}"):
        replay_conf(range(1, BULK_LIMIT + 2))


def _event(**values: Any) -> DlqEvent:
    return DlqEvent(**{"envelope": None, "raw_value": None, **values})


def test_raw_bytes_are_the_orders_when_it_did_not_decode_else_the_records() -> None:
    undecodable = raw_bytes(_event(envelope={"failed_order": None, "raw_value_b64": "/wA="}))
    foreign = raw_bytes(_event(raw_value=b"\x00" * 5000))

    assert undecodable is not None and (undecodable.hex, undecodable.base64) == ("ff 00", "/wA=")
    assert "order's value" in undecodable.what and not undecodable.cut
    assert foreign is not None and foreign.length == 5000 and foreign.cut
    assert "not an orderproc envelope" in foreign.what
    assert raw_bytes(_event(envelope={"failed_order": ORDER}, raw_value=b"{}")) is None
