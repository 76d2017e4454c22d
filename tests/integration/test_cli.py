"""The command line as a user runs it: real processes against the real broker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from orderproc.config import Settings
from orderproc.errors import BrokerError
from orderproc.kafka.topics import ensure_topics
from orderproc.metrics import MetricsServer
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import open_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.worker.consumer import OrderConsumer

pytestmark = pytest.mark.integration

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def test_produce_prints_the_original_lines_and_delivers_every_order(
    make_settings: Callable[..., Settings], run_cli: RunCli, read_all: Callable[..., list[Any]]
) -> None:
    settings = make_settings(partitions=2)

    result = run_cli(settings, "produce", "--count", "6", "--rate", "0", "--seed", "3")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    produced = [line for line in lines if line.startswith("Produced: ")]
    delivered = [line for line in lines if line.startswith("Delivered to ")]
    assert len(produced) == 6 and len(delivered) == 6
    pattern = r"Produced: \{'orderId': '[0-9a-f-]{36}', 'product': 'item[1-5]', 'price': \d+\.\d+\}"
    assert all(re.fullmatch(pattern, line) for line in produced)
    assert all(
        re.fullmatch(rf"Delivered to {settings.orders_topic} \[[01]\]", d) for d in delivered
    )
    assert "produced=6 delivered=6 failed=0" in result.stderr
    records = read_all(settings.orders_topic)
    keys = {m.key().decode() for m in records}
    ids = {SchemalessSerde().decode(m.value()).order_id for m in records}
    assert keys == ids and len(ids) == 6  # keyed by orderId


def test_dlq_tail_prints_events_like_the_original_and_as_json(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer], run_cli: RunCli
) -> None:
    settings = make_settings()
    envelope = {
        "failed_order": {"orderId": "x1", "product": "item1", "price": 120.0},
        "reason": "r",
    }
    producer = make_producer()
    producer.produce(settings.dlq_topic, key=b"x1", value=json.dumps(envelope).encode())
    producer.produce(settings.dlq_topic, key=b"x2", value=b"not json")  # shown, never fatal
    assert producer.flush(30) == 0

    pretty = run_cli(settings, "dlq", "tail", "--max-messages", "2", "--idle-exit", "20")
    as_json = run_cli(
        settings,
        "dlq",
        "tail",
        "--json",
        "--from-beginning",
        "--max-messages",
        "2",
        "--group",
        "other-group",
    )

    assert pretty.returncode == 0, pretty.stderr
    assert pretty.stdout.count("--- DLQ EVENT ---") == 2
    assert '"reason": "r"' in pretty.stdout
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rows[0]["event"] == envelope and rows[0]["key"] == "x1"
    assert rows[1]["event"] == {"unparsed_value": "not json"}
    assert rows[0]["dlq"] == {"topic": settings.dlq_topic, "partition": 0, "offset": 0}


def test_metrics_and_health_endpoints_report_the_consumer(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer]
) -> None:
    settings = make_settings(max_attempts=1)
    producer = make_producer()
    serde = SchemalessSerde()
    for order in [
        Order("m1", "item1", 10.0),
        Order("m2", "item2", 30.0),
        Order("m3", "item1", 500.0),
    ]:
        producer.produce(
            settings.orders_topic, key=order.order_id.encode(), value=serde.encode(order)
        )
    assert producer.flush(30) == 0
    with open_engine(settings.effective_database_url) as engine:
        upgrade(engine)
        consumer = OrderConsumer(settings, OrderRepository(engine), echo=None)
        server = MetricsServer(consumer.metrics.registry, consumer.health, "127.0.0.1", 0).start()
        try:
            worker = threading.Thread(target=consumer.run, kwargs={"idle_exit_s": 2})
            worker.start()
            worker.join(120)
            base = f"http://127.0.0.1:{server.port}"
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
            health = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=5).read())
        finally:
            server.stop()

    assert "orderproc_orders_processed_total 2.0" in metrics
    assert 'orderproc_orders_dead_lettered_total{category="business_rule"} 1.0' in metrics
    assert "orderproc_running_average_price 20.0" in metrics
    assert f'orderproc_messages_consumed_total{{topic="{settings.orders_topic}"}} 3.0' in metrics
    assert health == {"status": "ok", "detail": "ok"}


def test_unreachable_broker_is_one_clear_line(
    make_settings: Callable[..., Settings], run_cli: RunCli
) -> None:
    settings = make_settings(create=False, bootstrap_servers="127.0.0.1:1", admin_timeout_s=2)

    result = run_cli(settings, "consume", "--max-messages", "1")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "orderproc: error: cannot reach Kafka at 127.0.0.1:1 within 2 s: "
        "Failed to get metadata: Local: Broker transport failure"
    )
    assert "Traceback" not in result.stderr
    # In process it is a BrokerError: callers can tell a broker outage from a bad setting.
    with pytest.raises(BrokerError, match=r"^cannot reach Kafka at 127\.0\.0\.1:1 within 2 s: "):
        ensure_topics(settings)


def test_invalid_setting_is_one_clear_line(
    make_settings: Callable[..., Settings], settings_env: Callable[[Settings], dict[str, str]]
) -> None:
    settings = make_settings(create=False)
    env = settings_env(settings) | {"ORDERPROC_RETRY_MODE": "sideways"}

    result = subprocess.run(
        [sys.executable, "-m", "orderproc", "consume"], env=env, capture_output=True, text=True
    )

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "orderproc: error: invalid setting ORDERPROC_RETRY_MODE: "
        "Input should be 'blocking' or 'non-blocking'"
    )
