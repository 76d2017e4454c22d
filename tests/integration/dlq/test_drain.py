"""Draining the DLQ into the store: exactly once per record, bounded, loud when Kafka is down."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, func, select

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.errors import DrainError
from orderproc.kafka.clients import drain_consumer_overrides
from orderproc.store.tables import AuditLog, DlqEvent

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]


def committed_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer(settings.kafka_config(**drain_consumer_overrides(settings)))
    try:
        meta = consumer.list_topics(settings.dlq_topic, timeout=10).topics[settings.dlq_topic]
        tps = [TopicPartition(settings.dlq_topic, p) for p in meta.partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(partitions=3, database_url=db_url, batch_size=4)


# -- tests ------------------------------------------------------------------------------------


def test_every_record_is_stored_once_and_a_rerun_adds_nothing(
    settings: Settings,
    engine: Engine,
    dead_letter: Helper,
    produce_raw: Helper,
    make_orders: Helper,
    count_rows: Helper,
) -> None:
    dead_letter(settings, make_orders(10))
    produce_raw(settings, [b"\xffnot json", b'{"something": "else"}'])

    first = run_drain(settings)
    second = run_drain(settings)

    assert (first.consumed, first.inserted, first.caught_up) == (12, 12, True)
    assert (second.consumed, second.inserted, second.caught_up) == (0, 0, True)
    assert count_rows(engine) == 12
    with engine.connect() as conn:
        coords = {
            tuple(r) for r in conn.execute(select(DlqEvent.dlq_partition, DlqEvent.dlq_offset))
        }
        unknown = conn.scalar(
            select(func.count()).select_from(DlqEvent).where(DlqEvent.category == "unknown")
        )
        drained_audits = conn.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "drained")
        )
    assert len(coords) == 12
    assert unknown == 2
    assert drained_audits == 12
    assert sum(committed_offsets(settings).values()) == 12


def test_crash_between_db_commit_and_offset_commit_stores_nothing_twice(
    settings: Settings, engine: Engine, dead_letter: Helper, make_orders: Helper, count_rows: Helper
) -> None:
    dead_letter(settings, make_orders(12))

    def crash(_records: Sequence[Any]) -> None:
        raise RuntimeError("killed after the database commit")

    with pytest.raises(RuntimeError, match="killed"):
        run_drain(settings, after_db_commit=crash)
    stored_before_crash = count_rows(engine)
    assert 0 < stored_before_crash < 12
    assert all(o < 0 for o in committed_offsets(settings).values())  # nothing committed

    rerun = run_drain(settings)

    assert count_rows(engine) == 12
    assert rerun.duplicates == stored_before_crash
    assert rerun.inserted == 12 - stored_before_crash


def test_max_messages_bounds_a_run_and_the_next_run_continues(
    settings: Settings, engine: Engine, dead_letter: Helper, make_orders: Helper, count_rows: Helper
) -> None:
    dead_letter(settings, make_orders(9))

    first = run_drain(settings, max_messages=5)
    assert (first.consumed, first.caught_up) == (5, False)
    assert count_rows(engine) == 5

    second = run_drain(settings)
    assert (second.consumed, second.inserted, second.caught_up) == (4, 4, True)
    assert count_rows(engine) == 9


def test_an_unreachable_broker_fails_instead_of_looking_empty(
    make_settings: Callable[..., Settings], sqlite_url: str, closed_port: int
) -> None:
    settings = make_settings(create=False, database_url=sqlite_url)
    down = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{closed_port}"})

    with pytest.raises(DrainError, match="cannot reach Kafka"):
        run_drain(down, metadata_timeout_s=1.0)


def test_a_missing_dlq_topic_fails(make_settings: Callable[..., Settings], sqlite_url: str) -> None:
    settings = make_settings(create=False, database_url=sqlite_url)

    with pytest.raises(DrainError, match="not available"):
        run_drain(settings)


def test_a_replayed_order_that_fails_again_keeps_counting_replays(
    settings: Settings, engine: Engine, dead_letter: Helper, make_orders: Helper
) -> None:
    # Replayed twice already: the consumer kept the replay's lineage headers on the DLQ record.
    lineage = [("replay.id", b"r2"), ("replay.count", b"2")]
    dead_letter(settings, make_orders(1), headers=lineage)
    run_drain(settings)
    # The same order dead-lettered again without lineage headers inherits the count.
    dead_letter(settings, make_orders(1))
    run_drain(settings)

    with engine.connect() as conn:
        counts = list(conn.scalars(select(DlqEvent.replay_count).order_by(DlqEvent.id)))
    assert counts == [2, 2]
