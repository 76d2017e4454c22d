"""Consumer metrics and worker health, without binding a port.

``MetricsServer`` binds a socket, so it is not covered here (unit tests do no I/O).
"""

from __future__ import annotations

import json
import platform

import pytest
from prometheus_client import CollectorRegistry

import orderproc
from orderproc.metrics import ConsumerMetrics, Health, worker_registry
from orderproc.metrics.server import librdkafka_version

pytestmark = pytest.mark.unit

# Trimmed from a real librdkafka statistics payload (statistics.interval.ms) of a consumer
# assigned orders[0] and orders[1]; partition 2 belongs to another member, and "-1" is
# librdkafka's internal UA (unassigned) partition.
LIBRDKAFKA_STATS = {
    "name": "rdkafka#consumer-1",
    "client_id": "rdkafka",
    "type": "consumer",
    "ts": 5_016_483_227_792,
    "time": 1_772_352_000,
    "replyq": 0,
    "msg_cnt": 0,
    "brokers": {
        "127.0.0.1:9092/1": {"name": "127.0.0.1:9092/1", "nodeid": 1, "state": "UP"},
    },
    "topics": {
        "orders": {
            "topic": "orders",
            "age": 35_012,
            "metadata_age": 5_006,
            "partitions": {
                "0": {
                    "partition": 0,
                    "broker": 1,
                    "leader": 1,
                    "desired": True,
                    "fetch_state": "active",
                    "committed_offset": 1_200,
                    "stored_offset": 1_205,
                    "hi_offset": 1_247,
                    "lo_offset": 0,
                    "consumer_lag": 47,
                    "consumer_lag_stored": 42,
                },
                "1": {
                    "partition": 1,
                    "broker": 1,
                    "leader": 1,
                    "desired": True,
                    "fetch_state": "active",
                    "committed_offset": 880,
                    "hi_offset": 880,
                    "consumer_lag": 0,
                },
                "2": {
                    "partition": 2,
                    "broker": 1,
                    "leader": 1,
                    "desired": False,
                    "fetch_state": "none",
                    "committed_offset": -1001,
                    "hi_offset": 901,
                    "consumer_lag": -1,
                },
                "-1": {"partition": -1, "broker": -1, "leader": -1, "consumer_lag": -1},
            },
        },
        "orders.retry.1": {
            "topic": "orders.retry.1",
            "partitions": {
                "0": {"partition": 0, "fetch_state": "active", "consumer_lag": 3},
            },
        },
    },
    "cgrp": {"state": "up", "join_state": "steady", "assignment_size": 3},
}


def _lag(metrics: ConsumerMetrics, topic: str, partition: str) -> float | None:
    name = (
        "orderproc_retry_backlog_messages"
        if ".retry." in topic
        else "orderproc_consumer_lag_messages"
    )
    return metrics.registry.get_sample_value(
        name, {"group": "order-group", "topic": topic, "partition": partition}
    )


def _metrics() -> ConsumerMetrics:
    return ConsumerMetrics(group="order-group", retry_topics=["orders.retry.1"])


def test_lag_is_published_per_assigned_partition() -> None:
    metrics = _metrics()

    metrics.update_lag_from_stats(json.dumps(LIBRDKAFKA_STATS))

    assert _lag(metrics, "orders", "0") == 47
    assert _lag(metrics, "orders", "1") == 0
    assert _lag(metrics, "orders.retry.1", "0") == 3


def test_unknown_lag_and_the_internal_partition_are_not_published() -> None:
    metrics = _metrics()

    metrics.update_lag_from_stats(json.dumps(LIBRDKAFKA_STATS))

    assert _lag(metrics, "orders", "2") is None
    assert _lag(metrics, "orders", "-1") is None


def test_later_stats_update_the_lag() -> None:
    metrics = _metrics()
    metrics.update_lag_from_stats(json.dumps(LIBRDKAFKA_STATS))
    caught_up = json.loads(json.dumps(LIBRDKAFKA_STATS))
    caught_up["topics"]["orders"]["partitions"]["0"]["consumer_lag"] = 0

    metrics.update_lag_from_stats(json.dumps(caught_up))

    assert _lag(metrics, "orders", "0") == 0


@pytest.mark.parametrize("payload", ["", "{not json", json.dumps({"name": "rdkafka#c-1"})])
def test_unusable_stats_are_ignored_without_raising(payload: str) -> None:
    # stats_cb runs inside librdkafka's poll: raising there would break the consume loop.
    metrics = _metrics()

    metrics.update_lag_from_stats(payload)

    assert _lag(metrics, "orders", "0") is None


def test_each_consumer_gets_its_own_registry() -> None:
    first, second = ConsumerMetrics(), ConsumerMetrics()

    first.processed.inc()

    assert first.registry.get_sample_value("orderproc_orders_processed_total") == 1
    assert second.registry.get_sample_value("orderproc_orders_processed_total") == 0


def test_metrics_can_share_a_given_registry() -> None:
    registry = CollectorRegistry()

    metrics = ConsumerMetrics(registry)
    metrics.dead_lettered.labels("validation").inc()

    assert (
        registry.get_sample_value(
            "orderproc_orders_dead_lettered_total", {"category": "validation"}
        )
        == 1
    )


# -- Health ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_fresh_worker_is_healthy(clock: FakeClock) -> None:
    assert Health(stale_after_s=60.0, clock=clock).status() == (True, "ok")


def test_worker_is_healthy_while_the_loop_keeps_beating(clock: FakeClock) -> None:
    health = Health(stale_after_s=60.0, clock=clock)
    for _ in range(5):
        clock.now += 50.0
        health.beat()

    assert health.status() == (True, "ok")


def test_silent_loop_becomes_unhealthy_after_the_stale_limit(clock: FakeClock) -> None:
    health = Health(stale_after_s=60.0, clock=clock)

    clock.now += 60.0
    assert health.status()[0] is True
    clock.now += 30.0
    assert health.status() == (False, "loop silent for 90s")


def test_a_beat_makes_a_stale_worker_healthy_again(clock: FakeClock) -> None:
    health = Health(stale_after_s=60.0, clock=clock)
    clock.now += 120.0

    health.beat()

    assert health.status() == (True, "ok")


def test_failure_is_reported_even_while_beating(clock: FakeClock) -> None:
    health = Health(stale_after_s=60.0, clock=clock)

    health.fail("1 retry/DLQ deliveries failed, first: orders_dlq: Broker: timed out")
    health.beat()

    assert health.status() == (
        False,
        "1 retry/DLQ deliveries failed, first: orders_dlq: Broker: timed out",
    )


def test_the_health_gauge_follows_health_at_each_scrape(clock: FakeClock) -> None:
    health = Health(stale_after_s=60.0, clock=clock)
    registry = worker_registry("consumer", health)

    assert registry.get_sample_value("orderproc_worker_healthy") == 1
    clock.now += 90.0
    assert registry.get_sample_value("orderproc_worker_healthy") == 0
    build = registry.get_sample_value(
        "orderproc_build_info",
        {"role": "consumer", "version": orderproc.__version__,
         "python": platform.python_version(), "librdkafka": librdkafka_version()},
    )  # fmt: skip
    assert build == 1


def test_a_paused_partitions_end_offset_refreshes_its_lag() -> None:
    metrics = _metrics()
    metrics.update_lag_from_stats(json.dumps(LIBRDKAFKA_STATS))

    metrics.lag.set_end(("orders", 0), 1_300)  # paused: the statistics still say 1,247

    assert _lag(metrics, "orders", "0") == 100  # against the committed 1,200


def test_a_revoked_partition_leaves_no_lag_behind() -> None:
    metrics = _metrics()
    metrics.update_lag_from_stats(json.dumps(LIBRDKAFKA_STATS))
    revoked = json.loads(json.dumps(LIBRDKAFKA_STATS))
    del revoked["topics"]["orders"]["partitions"]["1"]

    metrics.update_lag_from_stats(json.dumps(revoked))

    assert _lag(metrics, "orders", "1") is None
    assert _lag(metrics, "orders", "0") == 47
