"""Scenario 1: ``kill -9`` of the consumer five times while orders stream in, 10 % failing.

The producer runs as a process throughout; each consumer incarnation is killed once it
has moved the store forward, and a new one is started at once (as a supervisor would).
The last one runs until it has been idle (nothing pending) and exits by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orderproc.config import RetryMode, Settings

pytestmark = pytest.mark.faults

KILLS = 5


@pytest.mark.parametrize("mode", [RetryMode.NON_BLOCKING, RetryMode.BLOCKING])
def test_kill_9_five_times_during_a_run_loses_no_order(
    mode: RetryMode,
    scale: int,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(
        partitions=3,
        database_url=pg_url,
        retry_mode=mode,
        max_attempts=3,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
        batch_size=100,
        session_timeout_ms=6000,  # a killed member leaves the group after 6 s, not 45 s
    )
    total = 3000 * scale
    producer = procs.produce(settings, total, rate=150 * scale, fail_share=0.1)  # ~20 s
    consumer = procs.consume(settings)
    at_kill = []
    for k in range(1, KILLS + 1):
        # Each incarnation must have stored something of its own before it dies.
        target = max(count_processed(settings) + 1, k * int(total * 0.9) // (KILLS + 2))
        wait_until(
            lambda t=target: count_processed(settings) >= t,
            240,
            f"incarnation {k} to store {target} orders",
        )
        assert consumer.kill9() == -9
        at_kill.append(count_processed(settings))
        consumer = procs.consume(settings, "--idle-exit", "8")

    assert producer.wait(300) == 0, producer.tail()
    assert produced_summary(producer)["failed"] == 0
    assert consumer.wait(600) == 0, consumer.tail()

    result = reconcile(f"kill-9-x{KILLS}-{mode.value}", settings)
    cheap = sum(1 for price in result.produced.values() if price <= settings.price_threshold)
    assert at_kill[-1] < cheap, f"the last kill must land mid-stream: {at_kill} of {cheap}"
    result.check(settings.price_threshold)
