"""The drain's offset commit: asked again while the group's coordinator moves or the group
rebalances, failed for good on a refusal (the records are stored either way)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from orderproc.dlq.drain import COMMIT_TRIES, commit_offsets
from orderproc.errors import DrainError

pytestmark = pytest.mark.unit

OFFSETS = [TopicPartition("orders_dlq", 0, 7)]


class CommitsAfter:
    """A consumer whose commit answers with each of ``answers`` in turn, then succeeds."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.commits = 0

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        assert asynchronous is False
        self.commits += 1
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, KafkaError):
            raise KafkaException(answer)
        if isinstance(answer, int):  # a per-partition error (confluent-kafka sets it in C)
            return [Committed("orders_dlq", 0, KafkaError(answer))]
        return list(offsets)


class Committed:
    """A partition of a commit's result, shaped like ``TopicPartition``."""

    def __init__(self, topic: str, partition: int, error: KafkaError | None) -> None:
        self.topic, self.partition, self.error = topic, partition, error


@pytest.mark.parametrize(
    "answer",
    [
        KafkaError(KafkaError.REBALANCE_IN_PROGRESS),
        KafkaError(KafkaError.NOT_COORDINATOR),
        KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS),
        KafkaError.REBALANCE_IN_PROGRESS,  # in the partition's result, not raised
    ],
    ids=["rebalance", "coordinator-moved", "coordinator-loading", "rebalance-per-partition"],
)
def test_a_commit_during_a_rebalance_or_a_coordinator_move_is_asked_again(answer: Any) -> None:
    consumer = CommitsAfter(answer, answer)
    slept: list[float] = []

    commit_offsets(consumer, OFFSETS, sleep=slept.append)  # type: ignore[arg-type]

    assert consumer.commits == 3
    assert slept == [0.2, 0.4]


def test_a_refused_commit_fails_the_run_at_once_in_one_line() -> None:
    consumer = CommitsAfter(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))

    with pytest.raises(DrainError, match="offset commit failed") as failed:
        commit_offsets(consumer, OFFSETS, sleep=lambda _s: None)  # type: ignore[arg-type]

    assert consumer.commits == 1 and "\n" not in str(failed.value)


def test_a_commit_that_keeps_passing_fails_after_its_tries() -> None:
    consumer = CommitsAfter(*[KafkaError(KafkaError.NOT_COORDINATOR)] * (COMMIT_TRIES + 1))

    with pytest.raises(DrainError, match=f"failed {COMMIT_TRIES} times"):
        commit_offsets(consumer, OFFSETS, sleep=lambda _s: None)  # type: ignore[arg-type]

    assert consumer.commits == COMMIT_TRIES
