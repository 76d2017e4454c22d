"""``orderproc status`` against the real broker, store and running workers, as an operator
runs it: all well (exit 0), then the consumer killed while orders keep coming (exit 1,
naming the consumer as unreachable and its group's lag as growing), and a broker that does
not answer (exit 2, one line)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from orderproc.config import Settings
from tests.conftest import RunCli, RunningWorker
from tests.support import metric_value, wait_until

pytestmark = pytest.mark.integration


def _status(run_cli: RunCli, settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli(settings, "status", "--json", "--timeout", "10", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def _processed(worker: RunningWorker) -> float:
    return metric_value(worker.metrics(), "orderproc_orders_processed_total") or 0.0


def test_status_is_ok_then_names_a_killed_consumer_and_its_growing_lag(
    make_settings: Callable[..., Settings],
    run_cli: RunCli,
    start_worker: Callable[..., RunningWorker],
    settings_env: Callable[[Settings], dict[str, str]],
) -> None:
    settings = make_settings(partitions=2)
    assert run_cli(settings, "db", "upgrade").returncode == 0
    consumer = start_worker(settings, "consume", "-q")
    monitor = start_worker(settings, "dlq", "tail", env={"ORDERPROC_MONITOR_INTERVAL_S": "1"})
    done = run_cli(settings, "produce", "--count", "20", "--rate", "0", "--fail-share", "0", "-q")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: _processed(consumer) >= 20, timeout_s=120, what="20 orders processed")

    def settled() -> tuple[int, dict[str, Any]] | None:
        code, doc = _status(run_cli, settings, "--metrics", consumer.url, "--metrics", monitor.url)
        return (code, doc) if code == 0 else None  # offsets are committed every second

    code, ok = wait_until(settled, timeout_s=60, what="status to say all is well")
    groups = {g["group"]: g for g in ok["groups"]}
    assert groups[settings.consumer_group]["lag"] == 0
    assert groups[settings.consumer_group]["members"] == 1
    assert {p["topic"] for p in groups[settings.consumer_group]["partitions"]} == {
        settings.orders_topic,
        *settings.retry_topics,
    }
    assert f"{settings.dlq_group}.drain" in groups
    assert [w["role"] for w in ok["workers"]] == ["consumer", "dlq-monitor"]
    assert ok["workers"][0]["healthy"] is True
    assert ok["workers"][0]["flood_breaker_open"] is False
    assert ok["review"]["counts"]["new"] == 0 and ok["dlq"]["undrained"] == 0
    assert ok["broker"]["reachable"] and ok["broker"]["nodes"]
    assert ok["findings"] == [] and ok["exit_code"] == 0

    consumer.stop(signal.SIGKILL)
    producer = subprocess.Popen(
        [sys.executable, "-m", "orderproc", "produce", "--rate", "50", "--fail-share", "0", "-q"],
        env=settings_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code, bad = _status(
            run_cli, settings, "--metrics", consumer.url, "--metrics", monitor.url, "--window", "3"
        )
    finally:
        producer.terminate()
        producer.wait(60)

    assert code == 1
    found = "\n".join(bad["findings"])
    assert f"worker at {consumer.url}: not reachable" in found
    assert f"{settings.consumer_group}: lag growing" in found
    text = run_cli(settings, "status", "--metrics", consumer.url, "--window", "0").stdout
    assert "NEEDS ATTENTION" in text.splitlines()[0]
    assert "NOT REACHABLE" in text


def test_status_that_cannot_reach_the_broker_exits_2_in_one_line(
    make_settings: Callable[..., Settings], run_cli: RunCli
) -> None:
    settings = make_settings(create=False, bootstrap_servers="127.0.0.1:1")

    done = run_cli(settings, "status", "--timeout", "2", "--window", "0")

    assert done.returncode == 2
    first = done.stdout.splitlines()[0]
    assert first.endswith("CANNOT LOOK")
    assert "cannot look: " in done.stdout and "127.0.0.1:1" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_bad_metrics_url_is_one_line(
    make_settings: Callable[..., Settings], run_cli: RunCli
) -> None:
    settings = make_settings(create=False)

    done = run_cli(settings, "status", "--metrics", "ftp://x", "--window", "0")

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "orderproc: error: --metrics 'ftp://x': expected a worker's URL, e.g. http://host:9108"
    ]
