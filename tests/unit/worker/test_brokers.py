"""Brokers that do not acknowledge: the consumer says once that it waits, once that it goes on."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from orderproc.worker.brokers import BrokerWait

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "orderproc.worker.brokers"]


def test_a_short_wait_is_not_worth_a_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    wait = BrokerWait(10.0, clock)
    since = clock.now
    for _ in range(9):  # a leader election after a controlled shutdown: a few seconds
        clock.now += 1
        wait.check(5, since)
    wait.check(0, None)

    assert _lines(caplog) == [] and not wait.waiting


def test_unacknowledged_records_are_told_once_then_their_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    wait = BrokerWait(10.0, clock)
    since = clock.now
    for _ in range(30):  # two brokers of three away: 30 s of checks
        clock.now += 1
        wait.check(42, since)
    clock.now += 0.5
    wait.check(0, None)  # acknowledged: the batch is durable
    assert wait.waiting  # answered, for as long as a wait must last to be told
    clock.now += 10
    wait.check(0, None)

    assert _lines(caplog) == [
        "waiting for the brokers: 42 retry/DLQ records unacknowledged for 10 s (a broker down, "
        "or fewer in-sync replicas than min.insync.replicas); offsets held, nothing is skipped",
        "the brokers answer again after 30.5 s; consuming",
    ]


def test_failing_commits_are_told_and_a_commit_or_nothing_to_commit_ends_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    wait = BrokerWait(10.0, clock)
    wait.committed(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE))
    clock.now += 12
    wait.committed(KafkaError(KafkaError.REQUEST_TIMED_OUT))
    wait.check(0, None)
    assert wait.waiting
    wait.check(0, None)  # still failing: no second line
    wait.committed(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))  # the group moved on: answered
    wait.check(0, None)
    wait.committed(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE))
    wait.committed(KafkaError(KafkaError._NO_OFFSET))  # nothing left to commit: answered
    wait.check(0, None)
    clock.now += 10
    wait.check(0, None)

    first, last = _lines(caplog)
    assert first.startswith("waiting for the brokers: offset commits failing (")
    assert "for 12 s" in first
    assert last == "the brokers answer again after 12.0 s; consuming"
    assert not wait.waiting


def test_an_outage_whose_parts_take_turns_is_one_wait(caplog: pytest.LogCaptureFixture) -> None:
    # Two brokers of three back: the records are acknowledged, then the group coordinator,
    # still loading its offsets, refuses commits for 40 s (seen on a loaded machine).
    caplog.set_level(logging.WARNING)
    clock = Clock()
    wait = BrokerWait(10.0, clock)
    since = clock.now
    clock.now += 70
    wait.check(39, since)
    wait.check(0, None)  # acknowledged
    clock.now += 1
    wait.committed(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))
    for _ in range(40):
        clock.now += 1
        wait.check(0, None)
    wait.committed(None)
    wait.check(0, None)
    clock.now += 10
    wait.check(0, None)

    first, last = _lines(caplog)
    assert first.startswith("waiting for the brokers: 39 retry/DLQ records unacknowledged")
    assert last == "the brokers answer again after 111.0 s; consuming"
    assert not wait.waiting


def test_a_consumer_stopping_soon_after_the_brokers_answer_still_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    wait = BrokerWait(10.0, clock)
    since = clock.now
    clock.now += 60
    wait.check(17, since)
    wait.check(0, None)  # answered; SIGTERM a few seconds later
    clock.now += 3
    wait.finish()

    assert _lines(caplog)[-1] == "the brokers answer again after 60.0 s; consuming"
    assert not wait.waiting
