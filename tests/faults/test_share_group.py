"""Queue mode under faults: share consumers killed with records in hand, a DLQ that refuses.

A share group's member holds each record it polled under a lock until it acknowledges
it; the consumer acknowledges only outcomes that are durable. So a member killed with
records in hand loses none (the broker hands them out again when their locks expire,
30 s), and a member whose DLQ refuses releases its poll and stops, accepting nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from orderproc.config import GroupType, Settings
from orderproc.store.engine import open_engine
from orderproc.store.tables import ProcessedOrder

pytestmark = pytest.mark.faults

KILL_ROUNDS = 3


def test_share_consumers_killed_with_records_in_hand_lose_no_order(
    scale: int,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    all_settled: Callable[..., None],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(partitions=1, group_type=GroupType.SHARE, database_url=pg_url,
                             max_attempts=3, backoff_initial_s=0.1, backoff_max_s=0.5)  # fmt: skip
    # Produces until stopped after the kills: every kill lands mid-stream, on members
    # that are polling, however long a member takes to start on a busy machine.
    producer = procs.produce(settings, 10**9, rate=100 * scale, fail_share=0.1)
    slow = ("--handler", "tests.faults.slow_handler:slow_price_rule")  # always holds records
    consumers = [procs.consume(settings, *slow) for _ in range(4)]
    for k in range(1, KILL_ROUNDS + 2):
        for consumer in consumers:
            wait_until(lambda c=consumer: "consuming " in c.output(), 120, "a member to poll")
        if k > KILL_ROUNDS:
            break
        base = count_processed(settings)
        wait_until(lambda b=base: count_processed(settings) >= b + 200, 180,
                   f"round {k}: 200 more orders stored")  # fmt: skip
        for victim in consumers[:2]:  # two of four, each with the records it polled
            assert victim.kill9() == -9
        consumers = [*consumers[2:], procs.consume(settings, *slow), procs.consume(settings, *slow)]

    assert producer.sigterm(300) == 0, producer.tail()
    summary = produced_summary(producer)
    assert summary["failed"] == 0 and summary["delivered"] == summary["produced"]
    all_settled(settings, 600, consumers)  # the killed members' locks expire after 30 s
    for consumer in consumers:
        assert consumer.running, consumer.tail()
        assert consumer.sigterm() == 0, consumer.tail()

    result = reconcile(f"share-kill-9-x{2 * KILL_ROUNDS}", settings)
    result.check(settings.price_threshold)
    # The kills did hit records in hand: good orders (which never fail) handed out again.
    with open_engine(settings.effective_database_url) as engine, engine.connect() as conn:
        attempts = list(conn.scalars(select(ProcessedOrder.attempts)))
    assert max(attempts) > 1, "no killed member held a record: the scenario missed its fault"


def test_a_share_consumer_whose_dlq_refuses_stops_accepting_nothing_it_could_not_place(
    scale: int,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    set_topic_config: Callable[..., None],
    topic_records: Callable[[Settings, str], list[Any]],
    count_processed: Callable[[Settings], int],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(partitions=1, group_type=GroupType.SHARE, database_url=pg_url,
                             max_attempts=2, backoff_initial_s=0.1, backoff_max_s=0.2)  # fmt: skip
    # Below any dead letter, even the reduced one: the DLQ refuses every record.
    set_topic_config(settings, settings.dlq_topic, "max.message.bytes", "64")
    producer = procs.produce(settings, 1000 * scale, rate=0, fail_share=0.1)
    assert producer.wait(300) == 0, producer.tail()

    consumer = procs.consume(settings)
    assert consumer.wait(180) == 1, consumer.tail()  # it stops by itself, exit 1
    assert consumer.last_line().startswith("orderproc: error: ")
    assert "Traceback" not in consumer.output()
    assert topic_records(settings, settings.dlq_topic) == []  # the DLQ took nothing

    set_topic_config(settings, settings.dlq_topic, "max.message.bytes", None)  # the fix
    # The refused poll was released, not accepted: its records come back to the next member.
    again = procs.consume(settings, "--idle-exit", "35")  # past a lock (30 s)
    assert again.wait(300) == 0, again.tail()
    assert count_processed(settings) > 0
    reconcile("share-dlq-refusing-then-fixed", settings).check(settings.price_threshold)
