"""Every worker and DAG task function against the secured broker, as user ``orderproc``.

The command line runs as a stranger runs it (``python -m orderproc`` with the
``ORDERPROC_*`` settings ``dev up --secure`` prints); the drain and replay task
functions get their Kafka clients from a ``kafka_default`` connection built as the
devstack builds it (``devstack.airflow.kafka_connection``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from devstack.airflow import database_connection, kafka_connection
from devstack.settings import KAFKA_VERSION
from orderproc.airflow.tasks import drain_dlq, replay_dlq
from orderproc.config import Settings, get_settings
from orderproc.dlq.store import DlqStore
from orderproc.store.engine import make_engine
from orderproc.store.tables import ProcessedOrder

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]
RunCli = Callable[..., subprocess.CompletedProcess[str]]


def test_produce_consume_and_tail_work_as_orderproc(
    secure_kafka: Any, secure_settings: Settings, run_cli: RunCli, no_password_in: Helper
) -> None:
    settings = secure_settings.model_copy(update={"max_attempts": 1})

    topics = run_cli(settings, "topics", "create")
    cheap = run_cli(settings, "produce", "--count", "1", "--rate", "0", "--fail-share", "0")
    dear = run_cli(settings, "produce", "--count", "1", "--rate", "0", "--fail-share", "1")
    consumed = run_cli(settings, "consume", "--idle-exit", "3", "--quiet")
    tail = run_cli(settings, "dlq", "tail", "--from-beginning", "--max-messages", "1", "--json")

    runs = (topics, cheap, dear, consumed, tail)
    assert [r.returncode for r in runs] == [0] * 5, [r.stderr for r in runs]
    assert f"{settings.dlq_topic}: exists" in topics.stdout.splitlines()
    assert "produced=1 delivered=1 failed=0" in cheap.stderr
    assert "produced=1 delivered=1 failed=0" in dear.stderr
    assert "consumed=2 processed=1 retried=0 dead_lettered=1 (business_rule=1)" in consumed.stderr
    engine = make_engine(settings.effective_database_url)
    with engine.connect() as conn:
        processed = list(conn.scalars(select(ProcessedOrder.price)))
    engine.dispose()
    assert len(processed) == 1 and processed[0] <= settings.price_threshold
    event = json.loads(tail.stdout)
    assert event["event"]["failed_order"]["price"] > settings.price_threshold
    assert secure_kafka.committed(settings.consumer_group, settings.orders_topic) == [2]
    no_password_in(*(r.stdout + r.stderr for r in runs))


def test_drain_and_replay_task_functions_work_through_the_airflow_connection(
    secure_kafka: Any,
    secure_settings: Settings,
    sqlite_url: str,
    dead_letter: Helper,
    make_orders: Helper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = secure_settings
    dead_letter(settings, make_orders(2))
    connection = kafka_connection(settings)
    extra = json.loads(connection)["extra"]
    assert extra["security.protocol"] == "SASL_SSL" and extra["sasl.username"] == "orderproc"
    assert extra["sasl.password"] == secure_kafka.passwords["orderproc"]
    assert extra["ssl.ca.location"] == str(secure_kafka.broker.tls.ca)
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", connection)
    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", database_connection(sqlite_url))
    for name in ("orders_topic", "dlq_topic", "dlq_group", "consumer_group"):
        monkeypatch.setenv(f"ORDERPROC_{name.upper()}", str(getattr(settings, name)))
    get_settings.cache_clear()
    try:
        drained = drain_dlq({"max_messages": 100, "timeout_s": 10}, run_id="manual__secure")
        store = DlqStore(make_engine(sqlite_url))
        ids = [e.id for e in store.list_events(limit=10)]
        store.approve(ids, actor="alice")
        replayed = replay_dlq({"max_messages": 10, "dry_run": False}, run_id="manual__secure")
    finally:
        get_settings.cache_clear()

    assert (drained["consumed"], drained["inserted"], drained["caught_up"]) == (2, 2, True)
    assert secure_kafka.committed(f"{settings.dlq_group}.drain", settings.dlq_topic) == [2]
    assert sorted(p["event_id"] for p in replayed["published"]) == sorted(ids)
    assert replayed["failed"] == {}
    copies = secure_kafka.read(settings.orders_topic, expected=2)
    assert {dict(m.headers())["replay.id"] for m in copies} == {b"manual__secure"}
    assert {e.status for e in store.list_events(limit=10)} == {"replayed"}


def test_dev_up_secure_prints_settings_that_work_as_they_are(
    secure_kafka: Any, no_password_in: Helper, tmp_path: Any
) -> None:
    # The session's broker runs: `dev up --secure` finds it, provisions again, prints the settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
    env |= {
        "ORDERPROC_DEVSTACK_DIR": str(secure_kafka.devstack.devstack_dir),
        "ORDERPROC_KAFKA_PORT": str(secure_kafka.devstack.kafka_port),
        "ORDERPROC_KAFKA_CONTROLLER_PORT": str(secure_kafka.devstack.kafka_controller_port),
        "ORDERPROC_DATA_DIR": str(tmp_path),
    }
    cli = [sys.executable, "-m", "orderproc"]

    up = subprocess.run([*cli, "dev", "up", "--secure"], env=env, capture_output=True, text=True)
    status = subprocess.run([*cli, "dev", "status"], env=env, capture_output=True, text=True)
    script = f'{up.stdout}\n"$@" topics create'
    topics = subprocess.run(["sh", "-c", script, "sh", *cli], env=env, capture_output=True,
                            text=True)  # fmt: skip

    pid = secure_kafka.broker.running_pid()
    line = f"kafka {KAFKA_VERSION} already running pid={pid} bootstrap={secure_kafka.bootstrap}"
    assert up.returncode == 0, up.stderr
    assert up.stderr.splitlines() == [f"{line} security=SASL_SSL"]
    exports = [ln.split("=", 1)[0] for ln in up.stdout.splitlines() if not ln.startswith("#")]
    assert exports == [
        "export ORDERPROC_BOOTSTRAP_SERVERS", "export ORDERPROC_SECURITY_PROTOCOL",
        "export ORDERPROC_SASL_MECHANISM", "export ORDERPROC_SASL_USERNAME",
        "export ORDERPROC_SASL_PASSWORD", "export ORDERPROC_SSL_CA_LOCATION",
    ]  # fmt: skip
    assert f"export ORDERPROC_SASL_PASSWORD={secure_kafka.passwords['orderproc']}" in up.stdout
    no_password_in(up.stderr, status.stdout, status.stderr, topics.stdout, topics.stderr)
    for user in ("admin", "controller"):
        assert secure_kafka.passwords[user] not in up.stdout
    assert f"{line.replace('already ', '')} security=SASL_SSL" in status.stdout.splitlines()
    assert topics.returncode == 0, topics.stderr
    assert topics.stdout.splitlines() == [
        "orders: exists", "orders.retry.1: exists", "orders.retry.2: exists", "orders_dlq: exists"
    ]  # fmt: skip
