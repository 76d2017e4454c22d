"""Scenario 1: ``kill -9`` of the consumer five times while orders stream in, 10 % failing.

The producer runs as a process throughout; each consumer incarnation is killed 3 s after
it joined the group (once it has stored orders of its own), and a new one is started at
once, as a supervisor would. The last one runs until it has been idle (nothing pending)
and exits by itself. What an incarnation did after its last offset commit (every 1 s) is
done again by the next: that is where the duplicate dead letters come from, at least once.
Exactly once (``--guarantee exactly-once``), the work after the last committed transaction
is aborted when the next incarnation (same transactional id) fences the dead one: a
``read_committed`` reader sees every dead letter and retry record once. In both modes the
drain then keeps one review row per failure, however many copies the DLQ holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from orderproc.config import ProcessingGuarantee, RetryMode, Settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.store import DlqStore
from orderproc.store.engine import open_engine

pytestmark = pytest.mark.faults

KILLS = 5
RUN_S = 3.0


ALO, EOS = ProcessingGuarantee.AT_LEAST_ONCE, ProcessingGuarantee.EXACTLY_ONCE


@pytest.mark.parametrize(
    ("mode", "guarantee"),
    [(RetryMode.NON_BLOCKING, ALO), (RetryMode.BLOCKING, ALO), (RetryMode.NON_BLOCKING, EOS)],
    ids=["non-blocking", "blocking", "exactly-once"],
)
def test_kill_9_five_times_during_a_run_loses_no_order(
    mode: RetryMode,
    guarantee: ProcessingGuarantee,
    scale: int,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
    topic_records: Callable[..., Any],
) -> None:
    settings = make_settings(
        processing_guarantee=guarantee,
        instance_id="killed",  # every incarnation: the next one fences the dead one
        partitions=3,
        database_url=pg_url,
        retry_mode=mode,
        max_attempts=3,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
        batch_size=100,
        session_timeout_ms=6000,  # a killed member leaves the group after 6 s, not 45 s
    )
    total = 4000 * scale
    # ~50 s of producing: the five kills (each costs a 6 s session timeout) land mid-stream.
    producer = procs.produce(settings, total, rate=80 * scale, fail_share=0.1)
    consumer = procs.consume(settings)
    at_kill = []
    for k in range(1, KILLS + 1):
        base = count_processed(settings)
        wait_until(lambda c=consumer: "assigned " in c.output(), 120, f"incarnation {k} to join")
        time.sleep(RUN_S)  # the fault's schedule: each incarnation runs a while, then dies
        wait_until(lambda b=base: count_processed(settings) > b, 120, f"incarnation {k} to store")
        assert consumer.kill9() == -9
        at_kill.append(count_processed(settings))
        consumer = procs.consume(settings, "--idle-exit", "8")

    assert producer.wait(300) == 0, producer.tail()
    assert produced_summary(producer)["failed"] == 0
    assert consumer.wait(600) == 0, consumer.tail()

    name = "exactly-once" if guarantee is EOS else mode.value
    result = reconcile(f"kill-9-x{KILLS}-{name}", settings)
    cheap = sum(1 for price in result.produced.values() if price <= settings.price_threshold)
    assert at_kill[-1] < cheap, f"the last kill must land mid-stream: {at_kill} of {cheap}"
    result.check(settings.price_threshold)
    if guarantee is EOS:
        assert result.duplicated == 0  # no dead letter twice, no processed row twice
        retried = [m.key() for m in topic_records(settings, settings.retry_topic(1))]
        assert len(retried) == len(set(retried)) == len(result.dead_lettered)  # each once

    drained = run_drain(settings)  # in both modes: one review row per failure
    with open_engine(settings.effective_database_url) as engine:
        events = DlqStore(engine).list_events(limit=100_000)
    assert sorted(e.order_id for e in events) == sorted(result.dead_lettered)
    assert sum(e.copies for e in events) == drained.consumed
