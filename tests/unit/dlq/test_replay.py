"""Pure parts of review and replay: planning, lineage, pacing, params, corrections."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from orderproc.airflow.params import ReplayParams, replay_request
from orderproc.clock import Pacer
from orderproc.dlq.corrections import coerce_field, payload_of, validated_order
from orderproc.dlq.plan import PARK, PUBLISH, REJECT, lineage_headers, plan_rows
from orderproc.dlq.replay import replay_id_for
from orderproc.dlq.summary import summary_markdown
from orderproc.errors import ConfigError, ReviewError
from orderproc.store.tables import DlqEvent

pytestmark = pytest.mark.unit


def _event(event_id: int, **fields: Any) -> DlqEvent:
    values: dict[str, Any] = {
        "order_id": f"o-{event_id}",
        "product": "Laptop",
        "price": 150.0,
        "replay_count": 0,
        "corrected_payload": None,
        "dlq_topic": "orders_dlq",
        "dlq_partition": 1,
        "dlq_offset": 10 + event_id,
    }
    values.update(fields)
    return DlqEvent(id=event_id, **values)


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds


# -- pacing -------------------------------------------------------------------------------


def test_pacer_spaces_calls_evenly() -> None:
    clock = FakeClock()
    limiter = Pacer(4.0, clock=clock, sleep=clock.sleep)
    sent_at = []
    for _ in range(5):
        assert limiter.wait() is True
        sent_at.append(clock.now - 100.0)

    assert sent_at == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert clock.sleeps == [0.25, 0.25, 0.25, 0.25]


def test_pacer_does_not_burst_after_a_stall() -> None:
    clock = FakeClock()
    limiter = Pacer(2.0, clock=clock, sleep=clock.sleep)
    limiter.wait()
    clock.now += 10.0  # the producer was slow for a while
    limiter.wait()
    limiter.wait()

    assert clock.sleeps == [0.5]


def test_pacer_rechecks_when_a_sleep_returns_early() -> None:
    clock = FakeClock()

    def short_sleep(seconds: float) -> None:  # like producer.poll(): may return at once
        clock.sleeps.append(round(seconds, 9))
        clock.now += seconds / 2

    limiter = Pacer(1.0, clock=clock, sleep=short_sleep)
    limiter.wait()
    limiter.wait()

    assert clock.now >= 101.0
    assert clock.sleeps[0] == 1.0 and len(clock.sleeps) > 1


def test_zero_rate_never_sleeps() -> None:
    clock = FakeClock()
    limiter = Pacer(0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        assert limiter.wait() is True

    assert clock.sleeps == []


def test_a_sleep_that_says_stop_ends_the_wait_at_once() -> None:
    clock = FakeClock()
    stop = threading.Event()
    stop.set()  # like a producer asked to stop: Event.wait returns True at once
    limiter = Pacer(1.0, clock=clock, sleep=stop.wait)

    assert limiter.wait() is True  # the first call never waits
    assert limiter.wait() is False
    assert clock.now == 100.0


# -- planning -------------------------------------------------------------------------------


def test_plan_parks_at_the_cap_rejects_invalid_and_publishes_corrections() -> None:
    events = [
        _event(1),
        _event(2, replay_count=3),
        _event(3, corrected_payload={"orderId": "o-3", "product": "Laptop", "price": 42.5}),
        _event(4, order_id=None, product=None, price=None),
        _event(5, product=""),
    ]

    plan = {p.event_id: p for p in plan_rows(events, max_replays=3)}

    assert [plan[i].action for i in range(1, 6)] == [PUBLISH, PARK, PUBLISH, REJECT, REJECT]
    assert plan[1].payload == {"orderId": "o-1", "product": "Laptop", "price": 150.0}
    assert plan[3].payload == {"orderId": "o-3", "product": "Laptop", "price": 42.5}
    assert "replay cap reached (3 of 3)" in (plan[2].note or "")
    assert "product is empty" in (plan[5].note or "")


def test_lineage_headers_name_the_run_the_count_and_the_dlq_record() -> None:
    headers = dict(lineage_headers(_event(7, replay_count=1), "manual__run"))

    assert headers == {
        "replay.id": b"manual__run",
        "replay.count": b"2",
        "replay.dlq.topic": b"orders_dlq",
        "replay.dlq.partition": b"1",
        "replay.dlq.offset": b"17",
    }
    assert not any(k.startswith("orderproc.") for k in headers)


def test_replay_ids_fit_the_64_character_columns() -> None:
    assert replay_id_for("manual__2026-03-01T12:00:00+00:00") == "manual__2026-03-01T12:00:00+00:00"
    long_id = replay_id_for("x" * 200)
    assert len(long_id) <= 64 and long_id == replay_id_for("x" * 200)
    assert replay_id_for(None) != replay_id_for(None)


# -- params ---------------------------------------------------------------------------------


def test_trigger_form_params_become_a_replay_request() -> None:
    request = replay_request(
        ReplayParams.parse(
            {
                "status": "approved",
                "order_ids": ["o-1", " ", "o-2"],
                "reasons": [],
                "categories": ["business_rule"],
                "since": "2026-03-01T00:00:00Z",
                "until": None,
                "max_messages": 5,
                "rate_per_sec": 2.5,
                "dry_run": True,
                "max_replays": 2,
            }
        )
    )

    assert request.selection.status == "approved"
    assert request.selection.order_ids == ("o-1", "o-2")
    assert request.selection.categories == ("business_rule",)
    assert request.selection.since == datetime(2026, 3, 1, tzinfo=UTC)
    assert (request.max_messages, request.rate_per_sec, request.dry_run) == (5, 2.5, True)
    assert request.max_replays == 2


def test_the_trigger_form_is_a_dry_run_unless_it_says_otherwise() -> None:
    empty = ReplayParams.parse({})
    as_the_form_sends_it = ReplayParams.parse(
        {"event_ids": None, "order_ids": None, "reasons": None, "categories": None}
    )

    assert empty.dry_run is True and replay_request(empty).dry_run is True
    assert as_the_form_sends_it == empty  # null lists: any
    assert replay_request(ReplayParams.parse({"event_ids": [3, 1]})).selection.ids == (3, 1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
         "parameter until: must be after since (2026-03-02T00:00:00+00:00), got 2026-03-01"),
        ({"since": "9999-12-31T23:59:59-23:59"},
         "parameter since: is out of range once converted to UTC"),
        ({"event_ids": [0]}, "parameter event_ids.0: Input should be greater than or equal to 1"),
    ],
    ids=["window", "overflow", "event-id"],
)  # fmt: skip
def test_params_the_form_cannot_check_are_refused_in_one_line(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        ReplayParams.parse(params)

    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "params",
    [{"status": "replayed"}, {"max_messages": 0}, {"rate_per_sec": -1}, {"since": "soon"}],
)
def test_bad_params_are_refused_in_one_line_naming_the_parameter(params: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        ReplayParams.parse(params)

    (name,) = params
    assert str(info.value).startswith(f"parameter {name}: ")
    assert "\n" not in str(info.value)


def test_summary_lists_every_row_with_its_outcome() -> None:
    result = {
        "replay_id": "r1",
        "topic": "orders",
        "dry_run": False,
        "planned": [
            {"event_id": 1, "order_id": "o-1", "action": PUBLISH, "replay_count": 0,
             "payload": {"price": 42.5}, "note": None},
            {"event_id": 2, "order_id": "o-2", "action": PARK, "replay_count": 3,
             "payload": None, "note": "replay cap reached (3 of 3)"},
        ],
        "published": [{"event_id": 1, "topic": "orders", "partition": 0, "offset": 9}],
        "failed": {},
    }  # fmt: skip

    text = summary_markdown(result)

    assert text.startswith("replay r1 -> orders\n")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()]
    assert ["1", "o-1", "publish", "0", "42.50", "partition 0 offset 9"] in rows
    assert ["2", "o-2", "park", "3", "-", "replay cap reached (3 of 3)"] in rows


# -- corrections ----------------------------------------------------------------------------


def test_corrections_are_coerced_to_the_schema_types() -> None:
    assert coerce_field("price", "42.5") == 42.5
    assert coerce_field("product", "Phone") == "Phone"
    for name, text in [("price", "cheap"), ("price", "nan"), ("colour", "red")]:
        with pytest.raises(ReviewError):
            coerce_field(name, text)


def test_validated_order_uses_the_schema_and_the_order_rules() -> None:
    assert validated_order({"orderId": "1", "product": "P", "price": 42.504}) == {
        "orderId": "1",
        "product": "P",
        "price": 42.504,  # kept as typed; rounding is for display only
    }
    with pytest.raises(ReviewError, match="price is negative"):
        validated_order({"orderId": "1", "product": "P", "price": -1.0})
    with pytest.raises(ReviewError, match="missing field"):
        validated_order({"orderId": "1", "price": 1.0})
    with pytest.raises(ReviewError, match="unknown field"):
        validated_order({"orderId": "1", "product": "P", "price": 1.0, "colour": "red"})


def test_payload_prefers_the_correction() -> None:
    corrected = {"orderId": "o-1", "product": "Laptop", "price": 42.5}
    assert payload_of(_event(1, corrected_payload=corrected)) == corrected
    assert payload_of(_event(1)) == {"orderId": "o-1", "product": "Laptop", "price": 150.0}
    assert payload_of(_event(1, price=None)) is None
