"""Scenario 4: the DLQ topic refuses every record, then an operator fixes it.

The DLQ topic's ``max.message.bytes`` is set below the size of even the reduced dead
letter. The consumer must stop (a DLQ that refuses everything is the infrastructure's
failure) with one line, and without committing any offset past an order it could not
dead-letter: every record below a committed offset already has its next home. With
the limit removed, a restarted consumer finishes the job and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from orderproc.config import Settings
from orderproc.serde import SchemalessSerde

pytestmark = pytest.mark.faults


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (absent: none committed)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.consumer_group}
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {
            tp.partition: tp.offset for tp in consumer.committed(tps, timeout=30) if tp.offset >= 0
        }
    finally:
        consumer.close()


def test_a_dlq_that_refuses_records_stops_the_consumer_uncommitted_until_it_is_fixed(
    scale: int,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    set_topic_config: Callable[..., None],
    topic_records: Callable[[Settings, str], list[Any]],
    stored_ids: Callable[[Settings], set[str]],
    count_processed: Callable[[Settings], int],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(
        partitions=3, database_url=pg_url, max_attempts=2, backoff_initial_s=0.2, backoff_max_s=0.5
    )
    # Below any dead letter, even the reduced one: the DLQ refuses every record.
    set_topic_config(settings, settings.dlq_topic, "max.message.bytes", "64")
    producer = procs.produce(settings, 3000 * scale, rate=0, fail_share=0.1)
    assert producer.wait(300) == 0, producer.tail()

    consumer = procs.consume(settings)
    assert consumer.wait(180) == 1, consumer.tail()  # it stops by itself, exit 1
    assert consumer.last_line().startswith("orderproc: error: ")
    assert "Traceback" not in consumer.output()
    assert count_processed(settings) > 0  # it got somewhere before the first dead letter

    # Nothing committed past an order whose next home does not have it: below each
    # committed offset, every order is stored or already in the next hop's topic.
    assert topic_records(settings, settings.dlq_topic) == []  # the DLQ took nothing
    serde, stored = SchemalessSerde(), stored_ids(settings)

    def ids(records: list[Any]) -> set[str]:
        return {serde.decode(m.value()).order_id for m in records}

    assert committed_offsets(settings, settings.orders_topic)  # it did commit what was done
    hops = [settings.orders_topic, *settings.retry_topics]  # the DLQ is the last home
    for hop, topic in enumerate(hops):
        next_home = ids(topic_records(settings, hops[hop + 1])) if hop + 1 < len(hops) else set()
        committed = committed_offsets(settings, topic)
        below = [
            m
            for m in topic_records(settings, topic)
            if m.offset() < committed.get(m.partition(), 0)
        ]
        homeless = ids(below) - stored - next_home
        assert not homeless, f"{topic}: committed past {len(homeless)} orders with no home"

    set_topic_config(settings, settings.dlq_topic, "max.message.bytes", None)  # the operator's fix
    again = procs.consume(settings, "--idle-exit", "5")
    assert again.wait(300) == 0, again.tail()

    reconcile("dlq-refusing-then-fixed", settings).check(settings.price_threshold)
