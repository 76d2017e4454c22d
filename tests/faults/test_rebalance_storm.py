"""Scenario 5: a rebalance storm: consumer instances join and leave every few seconds.

Three instances start; while the producer runs, every 2-4 s one more joins or one
leaves, half of the leavers with SIGTERM (a graceful leave: revoke, commit, exit 0)
and half with ``kill -9`` (the group notices after the session timeout). The
schedule comes from a fixed seed. Two instances finish the job.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from orderproc.config import Settings

pytestmark = pytest.mark.faults

MIN_EVENTS = 10
MAX_MEMBERS = 5


def test_a_rebalance_storm_loses_no_order(
    scale: int,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    all_settled: Callable[..., None],
    wait_until: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(
        partitions=6,
        database_url=pg_url,
        max_attempts=3,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        batch_size=100,
        session_timeout_ms=6000,
    )
    total = 6000 * scale
    producer = procs.produce(settings, total, rate=200 * scale, fail_share=0.1)  # ~30 s
    members = [procs.consume(settings) for _ in range(3)]
    rng = random.Random(20260501)
    events: list[str] = []

    while producer.running or len(events) < MIN_EVENTS:
        time.sleep(rng.uniform(2.0, 4.0))  # the storm's rhythm: this is the fault itself
        alive = [m for m in members if m.running]
        if len(alive) > 1 and (len(alive) >= MAX_MEMBERS or rng.random() < 0.5):
            leaver = rng.choice(alive)
            # SIGTERM is graceful once the stop handlers are in (the loop logs "consuming");
            # before that it ends a process that has not consumed anything yet.
            if rng.random() < 0.5 and "consuming " in leaver.output():
                assert leaver.sigterm() == 0, leaver.tail()  # a graceful leave
                events.append("term")
            else:
                leaver.kill9()
                events.append("kill")
        else:
            members.append(procs.consume(settings))
            events.append("join")
    while sum(m.running for m in members) < 2:
        members.append(procs.consume(settings))

    assert producer.wait(60) == 0, producer.tail()
    assert produced_summary(producer)["failed"] == 0
    survivors = [m for m in members if m.running]
    assert {"term", "kill", "join"} <= set(events), events
    all_settled(settings, 300, survivors)
    for member in survivors:  # a member started last may still be importing
        wait_until(lambda m=member: "consuming " in m.output(), 60, "its stop handlers")
        assert member.sigterm() == 0, member.tail()
    assert not [m.tail() for m in members if m.popen.returncode not in (0, -9)]

    reconcile("rebalance-storm", settings).check(settings.price_threshold)
