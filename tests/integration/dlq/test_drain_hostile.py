"""The drain is as defensive as the consumer: any record in the DLQ topic (foreign, hand
written, absurd headers, header names that are not UTF-8, JSON no column can hold) is stored,
with what cannot be parsed kept raw, and one bad record never fails a run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.store.engine import open_engine
from orderproc.store.tables import DlqEvent

pytestmark = pytest.mark.integration


def envelope(offset: int, **changes: Any) -> bytes:
    """An envelope of the failure of record ``orders[0]@offset`` (one failure per offset)."""
    base = {
        "failed_order": {"orderId": "o-1", "product": "item1", "price": 150.0},
        "reason": "Simulated error: high price",
        "error": {"class": "BusinessRuleError", "category": "business_rule", "retryable": True},
        "attempts": 3,
        "source": {"topic": "orders", "partition": 0, "offset": offset, "timestamp": 1700000000},
    }
    return json.dumps({**base, **changes}).encode()


ABSURD_SOURCE = {"partition": 2**40, "offset": -1, "timestamp": 10**30}
SURROGATES = (
    b'{"reason": "a\\u0000b\\ud800c", '
    b'"failed_order": {"orderId": "x\\u0000y", "product": "\\udfff", "price": 1.0}}'
)
HOSTILE: list[tuple[str, bytes, tuple[tuple[bytes, bytes], ...]]] = [
    (
        "absurd source header",
        b"not json at all",
        (
            (b"orderproc.source.partition", b"99999999999999"),
            (b"orderproc.source.offset", b"99999999999999999999999"),
            (b"orderproc.attempts", b"-99999999999"),
        ),
    ),
    ("absurd envelope numbers", envelope(1, attempts=10**15, source=ABSURD_SOURCE), ()),
    ("a replay count no column holds", envelope(2), ((b"replay.count", b"99999999999"),)),
    ("a header name that is not UTF-8", envelope(3), ((b"\xff\xfe", b"v"),)),
    ("NUL and lone surrogates in text", SURROGATES, ()),
    ("a price no float holds", b'{"reason": "r", "failed_order": {"price": 1e999}}', ()),
    ("an empty value", b"", ()),
    ("a huge reason", envelope(4, reason="r" * 100_000), ()),
]


@pytest.mark.parametrize("db", ["postgresql", "sqlite"])
def test_every_hostile_dlq_record_is_stored_and_the_run_succeeds(
    db: str,
    make_settings: Callable[..., Settings],
    request: pytest.FixtureRequest,
    kcat: Callable[..., None],
    dead_letter: Callable[..., None],
    make_orders: Callable[..., Any],
    produce_raw: Callable[..., None],
) -> None:
    url = str(request.getfixturevalue("pg_url" if db == "postgresql" else "sqlite_url"))
    settings = make_settings(database_url=url, batch_size=50)
    dead_letter(settings, make_orders(2, prefix="before"))
    for _name, value, headers in HOSTILE:
        if value:
            kcat(settings, value, topic=settings.dlq_topic, headers=headers)
        else:  # kcat sends nothing for an empty file
            produce_raw(settings, [value])
    dead_letter(settings, make_orders(2, prefix="after"))

    result = run_drain(settings, database_url=url)

    total = len(HOSTILE) + 4
    assert (result.consumed, result.inserted, result.caught_up) == (total, total, True)
    with open_engine(url) as engine, engine.connect() as conn:
        rows = {r.dlq_offset: r for r in conn.execute(select(DlqEvent))}
    assert len(rows) == total
    good = {rows[offset].order_id for offset in (0, 1, total - 2, total - 1)}
    assert good == {"before-0", "before-1", "after-0", "after-1"}
    hostile = {name: rows[2 + i] for i, (name, _value, _headers) in enumerate(HOSTILE)}
    assert hostile["absurd source header"].source_partition is None
    assert hostile["absurd source header"].attempts == 0
    assert hostile["absurd envelope numbers"].source_partition is None
    assert hostile["absurd envelope numbers"].attempts == 0
    assert hostile["a replay count no column holds"].replay_count == 0
    assert hostile["a header name that is not UTF-8"].order_id == "o-1"  # the value still parsed
    assert hostile["NUL and lone surrogates in text"].order_id == "xy"
    assert hostile["a price no float holds"].price is None
    assert hostile["an empty value"].reason == "empty DLQ value"
    assert len(hostile["a huge reason"].reason) <= 4000
    values = {name: value for name, value, _headers in HOSTILE}
    for name, row in hostile.items():  # whatever was parsed, the bytes are kept as they came
        assert row.raw_value in (values[name], values[name] or None), name
