"""Scenario 2: the broker stops for about 15 s mid-run; producer and consumer recover by
themselves.

The broker is one of this test's own (``dedicated_broker``): stopping the shared one
would break everybody else's tests. It is stopped with SIGTERM (a controlled
shutdown) while the producer and the consumer are running, and started again on the
same ports and data. Neither process is restarted: the producer's deliveries wait
out the outage (``delivery_timeout_ms``), the consumer's fetches, commits and
retry/DLQ deliveries resume when librdkafka reconnects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from orderproc.config import Settings
from orderproc.kafka.topics import ensure_topics

pytestmark = pytest.mark.faults

OUTAGE_S = 15.0


def test_broker_stopped_15s_mid_run_producer_and_consumer_recover(
    scale: int,
    dedicated_broker: Any,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    all_settled: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
) -> None:
    settings = make_settings(
        create=False,
        bootstrap_servers=dedicated_broker.bootstrap,
        partitions=3,
        database_url=pg_url,
        max_attempts=3,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
    )
    ensure_topics(settings)
    total = 12000 * scale
    producer = procs.produce(settings, total, rate=500 * scale, fail_share=0.1)  # ~24 s
    consumer = procs.consume(settings)
    wait_until(lambda: count_processed(settings) >= total // 5, 180, "a fifth of the orders")

    dedicated_broker.down()  # SIGTERM: the broker's controlled shutdown
    assert producer.running and consumer.running
    time.sleep(OUTAGE_S)  # the fault itself: how long the broker stays away
    dedicated_broker.up()

    assert producer.wait(600) == 0, producer.tail()
    summary = produced_summary(producer)
    assert summary == {"produced": total, "delivered": total, "failed": 0}
    all_settled(settings, 300, [consumer])
    assert consumer.running, f"the consumer did not survive the outage:\n{consumer.tail()}"
    assert consumer.sigterm() == 0, consumer.tail()

    result = reconcile("broker-outage-15s", settings)
    assert len(result.produced) == total  # the idempotent producer wrote each order once
    result.check(settings.price_threshold)
