"""A registry that does not answer is never a record's failure: the decision says wait, the
partition is held with a growing backoff, and the consumer says so once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from orderproc.config import Settings
from orderproc.errors import (
    DeserializationError,
    ErrorCategory,
    RegistryRefusedError,
    RegistryUnavailableError,
)
from orderproc.models import Order
from orderproc.records import Record
from orderproc.serde import SchemalessSerde
from orderproc.worker.decide import DeadLetter, Decider, RegistryDown
from orderproc.worker.handler import PriceThresholdHandler
from orderproc.worker.outage import RegistryOutage

pytestmark = pytest.mark.unit

RAW = b"\x00\x00\x00\x00\x07" + SchemalessSerde().encode(Order("o-1", "item1", 10.0))


class Serde(SchemalessSerde):
    """Decoding raises what the registry codec would."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def decode(self, data: bytes | None) -> Order:
        raise self.error

    def schema_id_of(self, data: bytes | None) -> int | None:
        return 7


def decide(error: Exception) -> Any:
    decider = Decider.from_settings(Settings(), PriceThresholdHandler(100.0), serde=Serde(error))
    return decider.decide(Record("orders", 0, 3, b"k", RAW, []), 1_700_000_000_000)


def test_an_unreachable_registry_is_a_wait_not_a_dead_letter() -> None:
    outcome = decide(RegistryUnavailableError("cannot reach the schema registry: refused"))

    assert outcome == RegistryDown("cannot reach the schema registry: refused")


def test_refused_credentials_stop_the_consumer() -> None:
    with pytest.raises(RegistryRefusedError):
        decide(RegistryRefusedError("wrong credentials: the schema registry rejected user 'x'"))


def test_a_records_own_schema_failure_is_a_dead_letter_carrying_its_schema_id() -> None:
    error = DeserializationError("unknown schema id 7", RAW, schema_id=7,
                                 category=ErrorCategory.SCHEMA)  # fmt: skip

    outcome = decide(error)

    assert type(outcome) is DeadLetter
    assert (outcome.failure.schema_id, outcome.failure.category) == (7, ErrorCategory.SCHEMA)


def test_the_wait_doubles_up_to_its_bound_and_the_outage_is_told_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = RegistryOutage(max_wait_s=3.0, clock=lambda: now[0])

    with caplog.at_level(logging.WARNING, logger="orderproc.worker.outage"):
        waits = [outage.wait_s(("orders", p % 2), "refused") for p in range(5)]
        outage.read(("orders", 0))  # one partition reads again, the other still waits
        now[0] += 17.5
        outage.read(("orders", 1))
        outage.read(("orders", 1))

    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for the schema registry (refused); records that need it wait, nothing is "
        "dead-lettered for it",
        "the schema registry answers again after 17.5 s; consuming",
    ]
    assert outage.wait_s(("orders", 0), "refused") == 0.5  # a new outage starts over
