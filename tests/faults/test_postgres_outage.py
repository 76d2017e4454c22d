"""Scenario 3: PostgreSQL stopped mid-consume, and crashed (``-m immediate``) mid-drain.

Both run on a PostgreSQL cluster of the test's own (``dedicated_postgres``), never on
the shared one. The consumer is not restarted: it waits for the database and resumes.
The drain fails the run it was in (a database that is gone is the infrastructure's
failure, not a record's), and the next run, after PostgreSQL's crash recovery, stores
every dead letter exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from orderproc.config import Settings
from orderproc.store.engine import open_engine
from orderproc.store.migrate import upgrade

pytestmark = pytest.mark.faults

OUTAGE_S = 10.0


def migrated(url: str) -> str:
    with open_engine(url) as engine:
        upgrade(engine)
    return url


def test_postgres_stopped_mid_consume_the_consumer_waits_and_resumes(
    scale: int,
    dedicated_postgres: Any,
    make_settings: Callable[..., Settings],
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    all_settled: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(
        partitions=3,
        database_url=migrated(dedicated_postgres.url),
        max_attempts=3,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
    )
    total = 6000 * scale
    producer = procs.produce(settings, total, rate=300 * scale, fail_share=0.1)  # ~20 s
    consumer = procs.consume(settings)
    wait_until(lambda: count_processed(settings) >= total // 5, 180, "a fifth of the orders")

    dedicated_postgres.stop("fast")  # every connection of the consumer is cut
    time.sleep(OUTAGE_S)  # the fault itself: how long the database stays away
    assert consumer.running, consumer.tail()
    dedicated_postgres.start()

    assert producer.wait(300) == 0, producer.tail()
    assert produced_summary(producer)["failed"] == 0
    all_settled(settings, 300, [consumer])
    assert consumer.running, f"the consumer did not survive the outage:\n{consumer.tail()}"
    assert consumer.sigterm() == 0, consumer.tail()
    assert "retrying in" in consumer.output()  # it did wait for the database

    reconcile("postgres-stopped-mid-consume", settings).check(settings.price_threshold)


def test_postgres_crash_during_a_drain_then_every_dead_letter_is_stored_once(
    scale: int,
    dedicated_postgres: Any,
    make_settings: Callable[..., Settings],
    procs: Any,
    wait_until: Callable[..., None],
    reconcile: Callable[..., Any],
) -> None:
    url = migrated(dedicated_postgres.url)
    # Small drain batches: the crash lands mid-drain, between many commits.
    settings = make_settings(partitions=3, database_url=url, max_attempts=1, batch_size=10)
    total = 6000 * scale
    producer = procs.produce(settings, total, rate=0, fail_share=0.1)
    assert producer.wait(300) == 0, producer.tail()
    consumer = procs.consume(settings, "--idle-exit", "5")
    assert consumer.wait(300) == 0, consumer.tail()

    def drained() -> int:
        with open_engine(url) as engine, engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM dlq_events")) or 0)

    drain = procs.start("drain", settings, module="tests.faults.drain_process")
    wait_until(lambda: drained() >= 50 or not drain.running, 120, "the drain to store rows")
    assert drain.running, f"the drain finished before the crash:\n{drain.tail()}"
    dedicated_postgres.stop("immediate")  # a crash: no shutdown checkpoint, recovery on start
    assert drain.wait(120) == 1, drain.tail()
    assert "drain: error:" in drain.last_line() and "Traceback" not in drain.output()
    dedicated_postgres.start()  # crash recovery

    again = procs.start("drain", settings, module="tests.faults.drain_process")
    assert again.wait(300) == 0, again.tail()
    assert "caught_up=True" in again.last_line()

    result = reconcile("postgres-crash-mid-drain", settings)
    result.check(settings.price_threshold)
    with open_engine(url) as engine, engine.connect() as conn:
        rows = conn.execute(text("SELECT dlq_partition, dlq_offset, order_id FROM dlq_events"))
        events = [tuple(r) for r in rows]
    coordinates = {(p, o) for p, o, _ in events}
    assert len(coordinates) == len(events)  # each DLQ record stored once
    assert len(events) == sum(result.dead_counts.values())  # ... and every one of them
    assert {oid for _, _, oid in events} == result.dead_lettered
