"""The consumer as a real process: SIGKILL mid-stream loses nothing; SIGTERM stops cleanly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from orderproc.config import Settings
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.worker.producer import OrderGenerator

pytestmark = pytest.mark.faults

SCALE = int(os.environ.get("ORDERPROC_TEST_SCALE", "1"))

StartConsumer = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_consumer(settings_env: Callable[[Settings], dict[str, str]]) -> StartConsumer:
    """``start_consumer(settings, *args)``: ``orderproc consume --quiet <args>`` as a process."""

    def start(settings: Settings, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "orderproc", "consume", "--quiet", *args],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


def produce_orders(producer: Producer, settings: Settings, n: int) -> dict[str, float]:
    serde, prices = SchemalessSerde(), {}
    gen = iter(OrderGenerator(rng=random.Random(11)))
    for _ in range(n):
        order = next(gen)
        prices[order.order_id] = order.price
        producer.produce(
            settings.orders_topic, key=order.order_id.encode(), value=serde.encode(order)
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    return prices


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def dead_lettered_ids(records: list[Any]) -> list[str]:
    """The order ids of DLQ records."""
    return [json.loads(m.value())["failed_order"]["orderId"] for m in records]


def test_kill_9_mid_stream_then_restart_loses_no_order(
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    start_consumer: StartConsumer,
    read_all: Callable[..., list[Any]],
    pg_url: str,
) -> None:
    settings = make_settings(
        partitions=3,
        database_url=pg_url,
        max_attempts=2,
        backoff_initial_s=0.1,
        batch_size=100,
        session_timeout_ms=6000,  # the killed member leaves the group sooner
    )
    total = 3000 * SCALE
    prices = produce_orders(make_producer(), settings, total)
    expensive = {oid for oid, p in prices.items() if p > settings.price_threshold}
    repo = OrderRepository(make_engine(pg_url))

    first = start_consumer(settings)
    wait_until(lambda: repo.count() >= 300, 120, "the first consumer to process some orders")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL
    processed_at_kill = repo.count()
    assert processed_at_kill < total - len(expensive), "the kill must land mid-stream"

    second = start_consumer(settings, "--idle-exit", "3")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err

    processed = repo.processed_ids()
    dead = dead_lettered_ids(read_all(settings.dlq_topic))

    assert processed == set(prices) - expensive  # every cheap order, exactly once (primary key)
    assert (
        set(dead) == expensive
    )  # every expensive one reached the DLQ (maybe twice after the kill)
    assert processed | set(dead) == set(prices)


def test_sigterm_finishes_in_flight_work_and_commits(
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Producer],
    start_consumer: StartConsumer,
) -> None:
    settings = make_settings(partitions=2, batch_size=50, max_attempts=1)
    prices = produce_orders(make_producer(), settings, 2000 * SCALE)
    repo_url = settings.effective_database_url

    first = start_consumer(settings)
    engine = make_engine(repo_url)
    upgrade(engine)
    repo = OrderRepository(engine)
    wait_until(lambda: repo.count() >= 100, 120, "the consumer to start processing")
    first.send_signal(signal.SIGUSR1)  # every thread's stack to stderr; it runs on
    first.send_signal(signal.SIGTERM)
    _, err_first = first.communicate(timeout=60)
    assert first.returncode == 0, err_first
    assert "SIGTERM received" in err_first
    dump = err_first.split("SIGTERM received")[0]
    assert "Current thread 0x" in dump and "(most recent call first)" in dump, err_first

    second = start_consumer(settings, "--idle-exit", "3")
    _, err_second = second.communicate(timeout=300)
    assert second.returncode == 0, err_second

    summary: dict[str, Any] = dict(
        part.split("=", 1) for part in err_second.strip().splitlines()[-1].split() if "=" in part
    )
    # Everything the first process handled was committed: nothing is redelivered.
    assert summary["duplicates"] == "0"
    cheap = {oid for oid, p in prices.items() if p <= settings.price_threshold}
    assert repo.processed_ids() == cheap
