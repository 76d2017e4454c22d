"""The decision for one record, table-driven: every outcome, no I/O.

Each case is a record (topic, value, headers) and a handler; the expected outcome
is named with the fields a user relies on (where it goes, which attempt, why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from orderproc.config import RetryMode, Settings
from orderproc.dlq.envelope import error_class_name
from orderproc.errors import (
    HIGH_PRICE_REASON,
    BusinessRuleError,
    ErrorCategory,
    PermanentError,
)
from orderproc.models import Order, Source
from orderproc.records import Record
from orderproc.serde import SchemalessSerde
from orderproc.worker.decide import (
    DeadLetter,
    Decider,
    NotDue,
    Processed,
    RetryInPlace,
    RetryLater,
)
from orderproc.worker.handler import PriceThresholdHandler
from orderproc.worker.retry import RetryPolicy

pytestmark = pytest.mark.unit

NOW = 1_800_000_000_000  # epoch ms "now" for every case
SERDE = SchemalessSerde()
CHEAP = SERDE.encode(Order("o-1", "item1", 42.5))
DEAR = SERDE.encode(Order("o-2", "item2", 142.5))
PREFIX = "orders.retry"


def settings(mode: RetryMode = RetryMode.NON_BLOCKING, max_attempts: int = 3) -> Settings:
    return Settings(
        retry_mode=mode,
        max_attempts=max_attempts,
        retry_topic_prefix=PREFIX,
        consumer_group="order-group",
    )


def decider(
    mode: RetryMode = RetryMode.NON_BLOCKING, max_attempts: int = 3, **handler: Any
) -> Decider:
    policy = RetryPolicy(max_attempts=max_attempts, initial_s=1.0, multiplier=2.0, jitter=0.0)
    return Decider.from_settings(
        settings(mode, max_attempts), handler.get("handler", PriceThresholdHandler(100.0)), policy
    )


def record(
    value: bytes | None,
    *,
    topic: str = "orders",
    headers: list[tuple[str, bytes]] | None = None,
    offset: int = 7,
) -> Record:
    return Record(topic, 1, offset, b"key", value, headers or [], 1_700_000_000_000)


def provenance(attempts: int, *, due_ms: int | None = None) -> list[tuple[str, bytes]]:
    headers = [
        ("orderproc.attempts", str(attempts).encode()),
        ("orderproc.first.failure.ms", b"1799999990000"),
        ("orderproc.source.topic", b"orders"),
        ("orderproc.source.partition", b"2"),
        ("orderproc.source.offset", b"99"),
        ("orderproc.source.timestamp.ms", b"1699999999000"),
    ]
    if due_ms is not None:
        headers.append(("orderproc.retry.due.ms", str(due_ms).encode()))
    return headers


ORIGINAL = Source("orders", 2, 99, 1699999999000)


@dataclass
class Case:
    name: str
    rec: Record
    expected: type
    checks: dict[str, Any] = field(default_factory=dict)
    mode: RetryMode = RetryMode.NON_BLOCKING
    max_attempts: int = 3
    handler: Any = None


def raises(exc: Exception) -> Any:
    def handler(_order: Order) -> None:
        raise exc

    return handler


CASES = [
    Case(
        "a cheap order is processed on its first attempt, at its own coordinates",
        record(CHEAP),
        Processed,
        {"attempts": 1, "source": None, "replay_id": None},  # None: the record's own coordinates
    ),
    Case(
        "a replayed copy keeps its replay id for the processed row",
        record(CHEAP, headers=[("replay.id", b"manual__2026")]),
        Processed,
        {"attempts": 1, "replay_id": "manual__2026"},
    ),
    Case(
        "non-blocking: a failing order goes to the first retry topic, due after the backoff",
        record(DEAR),
        RetryLater,
        {"topic": f"{PREFIX}.1", "due_ms": NOW + 1000, "attempts": 1, "reason": HIGH_PRICE_REASON},
    ),
    Case(
        "blocking: a failing order is retried in place after the backoff",
        record(DEAR),
        RetryInPlace,
        {"delay_s": 1.0, "attempts": 1},
        mode=RetryMode.BLOCKING,
    ),
    Case(
        "a retry-topic record read before its due time is held",
        record(DEAR, topic=f"{PREFIX}.1", headers=provenance(1, due_ms=NOW + 2500)),
        NotDue,
        {"wait_s": 2.5},
    ),
    Case(
        "a due retry that fails again goes to the next retry topic with the original source",
        record(DEAR, topic=f"{PREFIX}.1", headers=provenance(1, due_ms=NOW - 1)),
        RetryLater,
        {"topic": f"{PREFIX}.2", "due_ms": NOW + 2000, "attempts": 2, "source": ORIGINAL},
    ),
    Case(
        "the last attempt dead-letters, keeping the first failure time and the source",
        record(DEAR, topic=f"{PREFIX}.2", headers=provenance(2, due_ms=NOW - 1)),
        DeadLetter,
        {"attempts": 3, "source": ORIGINAL, "first_failure_ms": 1799999990000},
    ),
    Case(
        "a due retry that succeeds is processed with its attempt number and original source",
        record(CHEAP, topic=f"{PREFIX}.2", headers=provenance(2)),
        Processed,
        {"attempts": 3, "source": ORIGINAL},
    ),
    Case(
        "undecodable bytes are dead-lettered at once, the raw bytes kept",
        record(b"\xff\xfe not avro"),
        DeadLetter,
        {"attempts": 1, "category": ErrorCategory.DESERIALIZATION, "raw": b"\xff\xfe not avro"},
    ),
    Case(
        "an empty value is dead-lettered as undecodable",
        record(None),
        DeadLetter,
        {"attempts": 1, "category": ErrorCategory.DESERIALIZATION},
    ),
    Case(
        "a decodable but invalid order is dead-lettered as a validation failure",
        record(SERDE.encode_record({"orderId": "", "product": "item1", "price": 1.0})),
        DeadLetter,
        {"attempts": 1, "category": ErrorCategory.VALIDATION},
    ),
    Case(
        "a handler's PermanentError skips the retries",
        record(CHEAP),
        DeadLetter,
        {"attempts": 1, "reason": "no such product"},
        handler=raises(PermanentError("no such product")),
    ),
    Case(
        "any other handler exception is transient: retried, named after its class",
        record(CHEAP),
        RetryLater,
        {"attempts": 1, "category": ErrorCategory.TRANSIENT, "error_class": "TimeoutError"},
        handler=raises(TimeoutError("inventory service")),
    ),
    Case(
        "with one attempt allowed a failure is dead-lettered at once",
        record(DEAR),
        DeadLetter,
        {"attempts": 1, "category": ErrorCategory.BUSINESS_RULE},
        max_attempts=1,
    ),
    Case(
        "on a retry topic the topic says how many attempts were made, not the headers",
        record(CHEAP, topic=f"{PREFIX}.1", headers=[("orderproc.attempts", b"two")]),
        Processed,
        {"attempts": 2, "source": Source(f"{PREFIX}.1", 1, 7, 1_700_000_000_000)},
    ),
    Case(
        "a negative attempt count on a retry topic does not break the retry policy",
        record(DEAR, topic=f"{PREFIX}.1", headers=[("orderproc.attempts", b"-5")]),
        RetryLater,
        {"topic": f"{PREFIX}.2", "attempts": 2},
    ),
    Case(
        "provenance headers on the main topic are not ours to trust: ignored",
        record(DEAR, headers=provenance(4)),
        RetryLater,
        {
            "topic": f"{PREFIX}.1",
            "attempts": 1,
            "source": Source("orders", 1, 7, 1_700_000_000_000),
        },
    ),
    Case(
        "a source that is not the main topic, or out of range, is not trusted",
        record(
            DEAR,
            topic=f"{PREFIX}.1",
            headers=[
                ("orderproc.attempts", b"1"),
                ("orderproc.source.topic", b"orders"),
                ("orderproc.source.partition", b"99999999999999"),
                ("orderproc.source.offset", b"1"),
            ],
        ),
        RetryLater,
        {"source": Source(f"{PREFIX}.1", 1, 7, 1_700_000_000_000)},
    ),
    Case(
        "a due time no backoff could have set is not trusted: the record is due now",
        record(CHEAP, topic=f"{PREFIX}.1", headers=provenance(1, due_ms=NOW + 10**9)),
        Processed,
        {"attempts": 2},
    ),
    Case(
        "a record whose header names cannot be read is dead-lettered at once",
        Record("orders", 1, 7, b"key", CHEAP, [], None, "a header name is not valid UTF-8"),
        DeadLetter,
        {"attempts": 1, "category": ErrorCategory.DESERIALIZATION, "raw": CHEAP},
    ),
    Case(
        "an order longer than the store holds is dead-lettered before any write",
        record(SERDE.encode_record({"orderId": "x", "product": "p" * 201, "price": 1.0})),
        DeadLetter,
        {"category": ErrorCategory.VALIDATION},
    ),
]


def _field(outcome: Any, name: str) -> Any:
    failure = getattr(outcome, "failure", None)
    if name == "reason":
        return failure.reason
    if name == "category":
        return failure.category
    if name == "raw":
        return failure.raw_value
    if name == "error_class":
        from orderproc.dlq.envelope import error_class_name

        return error_class_name(failure.error)
    if hasattr(outcome, name):
        return getattr(outcome, name)
    return getattr(failure, name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    kwargs = {"handler": case.handler} if case.handler else {}
    outcome = decider(case.mode, case.max_attempts, **kwargs).decide(case.rec, NOW)

    assert type(outcome) is case.expected
    for name, value in case.checks.items():
        assert _field(outcome, name) == value, name


def test_a_failure_carries_the_whole_record_it_came_from() -> None:
    rec = record(b"\x00garbage", headers=[("trace", b"abc")])

    outcome = decider().decide(rec, NOW)

    assert isinstance(outcome, DeadLetter)
    assert outcome.failure.error.record is rec
    assert outcome.failure.key == b"key"
    assert outcome.failure.consumer_group == "order-group"


def test_blocking_retries_in_place_until_success() -> None:
    calls: list[Order] = []

    def flaky(order: Order) -> None:
        calls.append(order)
        if len(calls) < 3:
            raise BusinessRuleError("not yet")

    d = decider(RetryMode.BLOCKING, handler=flaky)
    rec = record(CHEAP)

    first = d.decide(rec, NOW)
    assert isinstance(first, RetryInPlace) and first.delay_s == 1.0
    second = d.decide_again(rec, first.failure, NOW + 1000)
    assert isinstance(second, RetryInPlace) and second.delay_s == 2.0
    third = d.decide_again(rec, second.failure, NOW + 3000)

    assert isinstance(third, Processed)
    assert third.attempts == 3
    assert second.failure.first_failure_ms == NOW  # the first failure time is kept
    assert second.failure.last_failure_ms == NOW + 1000


def test_blocking_dead_letters_after_the_last_attempt() -> None:
    d = decider(RetryMode.BLOCKING, max_attempts=2)
    rec = record(DEAR)

    first = d.decide(rec, NOW)
    assert isinstance(first, RetryInPlace)
    last = d.decide_again(rec, first.failure, NOW + 1000)

    assert isinstance(last, DeadLetter)
    assert last.failure.attempts == 2
    assert last.failure.order == Order("o-2", "item2", 142.5)


def test_a_failure_keeps_no_traceback_so_its_batch_is_freed_without_the_cyclic_collector() -> None:
    import gc

    def wrapped(_order: Order) -> None:
        try:
            raise KeyError("inventory")
        except KeyError as exc:
            raise TimeoutError("inventory service") from exc

    outcomes = [d.decide(record(DEAR), NOW) for d in (decider(), decider(handler=wrapped))]
    bad = record(b"\xff\xfe not avro")
    outcomes.append(decider().decide(bad, NOW))

    for outcome in outcomes:
        assert isinstance(outcome, RetryLater | DeadLetter)
        chain: BaseException | None = outcome.failure.error
        while chain is not None:
            assert chain.__traceback__ is None, repr(chain)
            chain = chain.__cause__ or chain.__context__
    assert error_class_name(outcomes[1].failure.error) == "TimeoutError"  # the envelope's
    # Nothing of a decision is left for the cyclic collector.
    deciding = decider(handler=wrapped)
    gc.collect()
    gc.disable()
    try:
        for _ in range(100):
            deciding.decide(record(DEAR), NOW)
        left = gc.collect()
    finally:
        gc.enable()
    assert left == 0
