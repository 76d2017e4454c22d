"""Paused partitions: held at the first unhandled record, resumed when due, forgotten on revoke."""

from __future__ import annotations

from typing import Any

import pytest

from orderproc.config import Settings
from orderproc.worker.holds import PartitionHolds
from orderproc.worker.offsets import OffsetPipeline
from orderproc.worker.routing import FailureRouter

pytestmark = pytest.mark.unit


class TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


@pytest.fixture
def counts() -> list[int]:
    return []


@pytest.fixture
def holds(fake_consumer: Any, fake_producer: Any, counts: list[int]) -> PartitionHolds:
    router = FailureRouter(Settings(), producer=fake_producer)
    return PartitionHolds(fake_consumer, OffsetPipeline(fake_consumer, router), counts.append)


def test_a_held_partition_is_paused_and_rewound_to_the_record(
    holds: PartitionHolds, fake_consumer: Any, counts: list[int]
) -> None:
    holds.hold("orders.retry.1", 0, 15, until=100.0)

    assert ("orders.retry.1", 0) in holds
    assert fake_consumer.paused == {("orders.retry.1", 0)}
    assert fake_consumer.seeks == [("orders.retry.1", 0, 15)]
    assert counts[-1] == 1  # the paused-partitions gauge


def test_only_due_partitions_resume(
    holds: PartitionHolds, fake_consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("orderproc.worker.holds.time.monotonic", lambda: now[0])
    holds.hold("orders.retry.1", 0, 1, until=1005.0)
    holds.hold("orders.retry.2", 0, 1, until=1030.0)

    assert holds.next_due_in() == 5.0
    holds.resume_due()
    assert fake_consumer.resumed == []

    now[0] = 1010.0
    holds.resume_due()

    assert fake_consumer.resumed == [("orders.retry.1", 0)]
    assert fake_consumer.paused == {("orders.retry.2", 0)}
    assert holds.next_due_in() == 20.0


def test_pause_rest_pauses_every_assigned_partition_not_yet_held(
    holds: PartitionHolds, fake_consumer: Any
) -> None:
    holds.hold("orders", 0, 8, until=50.0)

    holds.pause_rest([TP("orders", 0), TP("orders", 1), TP("orders", 2)], until=60.0)

    assert fake_consumer.paused == {("orders", 0), ("orders", 1), ("orders", 2)}
    assert fake_consumer.seeks == [("orders", 0, 8)]  # only the held one is rewound
    assert all(("orders", p) in holds for p in range(3))


def test_revoked_partitions_are_forgotten(holds: PartitionHolds, counts: list[int]) -> None:
    holds.hold("orders", 0, 1, until=50.0)
    holds.hold("orders", 1, 1, until=50.0)

    holds.forget([("orders", 0)])

    assert ("orders", 0) not in holds
    assert ("orders", 1) in holds
    assert counts[-1] == 1


def test_nothing_held_means_no_due_time(holds: PartitionHolds) -> None:
    assert not holds
    assert holds.next_due_in() is None
