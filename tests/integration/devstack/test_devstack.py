"""The devstack against a real Kafka 4 broker (and PostgreSQL).

Each module run gets its own devstack folder and free ports, so it never meets a
broker that other tests keep on 9092; the jars come from the repo's shared cache
(``<devstack_dir>/kafka-<version>/libs`` of the default settings), fetched once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import NewTopic
from typer.testing import CliRunner

from devstack.kafka import KafkaBroker
from devstack.maven import kafka_home
from devstack.postgres import database_url, postgres_down, postgres_status
from devstack.settings import (
    KAFKA_VERSION,
    DevstackError,
    DevstackSettings,
    get_devstack_settings,
)
from orderproc.cli import app as cli_app
from orderproc.kafka.clients import Admin
from tests.support import free_ports

pytestmark = pytest.mark.integration

# The console script's body, run with this interpreter: no PATH or venv layout assumed.
CLI = [sys.executable, "-c", "from orderproc.cli import main; main()"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> DevstackSettings:
    port, controller_port = free_ports(2)
    return DevstackSettings(
        devstack_dir=tmp_path_factory.mktemp("devstack"),
        kafka_port=port,
        kafka_controller_port=controller_port,
    )


@pytest.fixture(scope="module")
def shared_libs() -> Path:
    """The jars of the default devstack folder: fetched once, shared by every devstack."""
    return kafka_home(DevstackSettings().devstack_dir) / "libs"


@pytest.fixture
def broker(settings: DevstackSettings, shared_libs: Path) -> Iterator[KafkaBroker]:
    """A broker handle for this module's devstack; stopped (by pid) after each test."""
    handle = KafkaBroker(settings, libs_dir=shared_libs)
    yield handle
    handle.down()


@pytest.fixture
def cli_env(
    settings: DevstackSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Environment that points the CLI at this module's devstack."""
    env = {
        "ORDERPROC_DEVSTACK_DIR": str(settings.devstack_dir),
        "ORDERPROC_KAFKA_PORT": str(settings.kafka_port),
        "ORDERPROC_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_devstack_settings.cache_clear()
    yield env
    get_devstack_settings.cache_clear()


def _create_topic(bootstrap: str, topic: str) -> None:
    with Admin({"bootstrap.servers": bootstrap}) as admin:  # open until the future is done
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=30
        )
        futures[topic].result(timeout=30)


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(
        topic, value, on_delivery=lambda err, _msg: errors.append(err) if err else None
    )
    assert producer.flush(30) == 0, "record not delivered within 30 s"
    assert not errors


def _read_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"devstack-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(values) < expect and time.monotonic() < deadline:
            msg: Message | None = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_broker_keeps_data_across_restart(broker: KafkaBroker) -> None:
    first = broker.up()
    assert first.started and first.status.running and first.status.ready
    assert broker.status().describe() == (
        f"kafka {KAFKA_VERSION} running pid={first.status.pid} bootstrap={broker.bootstrap}"
    )
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    _create_topic(broker.bootstrap, topic)
    _produce(broker.bootstrap, topic, b"survives a restart")

    assert broker.down() == first.status.pid
    assert not broker.status().running
    assert not broker.paths.pid_file.exists()

    second = broker.up()
    assert second.started and second.status.pid != first.status.pid
    assert _read_all(broker.bootstrap, topic, expect=1) == [b"survives a restart"]


def test_up_twice_and_down_twice_are_harmless(broker: KafkaBroker) -> None:
    first = broker.up()
    again = broker.up()

    assert not again.started
    assert again.status.pid == first.status.pid and again.status.ready

    assert broker.down() == first.status.pid
    assert broker.down() is None
    assert not broker.status().running


def test_taken_port_is_a_clear_error(broker: KafkaBroker, settings: DevstackSettings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", settings.kafka_port))
        squatter.listen()

        with pytest.raises(DevstackError, match=f"127.0.0.1:{settings.kafka_port}.*in use"):
            broker.up()

    assert not broker.paths.pid_file.exists()


def test_cli_reports_a_taken_port_in_one_line(
    settings: DevstackSettings, cli_env: dict[str, str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", settings.kafka_controller_port))
        squatter.listen()
        result = subprocess.run(
            [*CLI, "dev", "up"],
            env={**os.environ, **cli_env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 1
    assert result.stderr.startswith("orderproc: error: port 127.0.0.1:")
    assert "kafka_controller_port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_status_shows_the_running_broker(broker: KafkaBroker, cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    stopped = runner.invoke(cli_app, ["dev", "status"])
    assert stopped.exit_code == 0, stopped.output
    assert f"kafka {KAFKA_VERSION} stopped bootstrap={broker.bootstrap}" in stopped.output

    pid = broker.up().status.pid
    running = runner.invoke(cli_app, ["dev", "status"])

    assert running.exit_code == 0, running.output
    assert f"kafka {KAFKA_VERSION} running pid={pid} bootstrap={broker.bootstrap}" in running.output


@pytest.mark.skipif(os.geteuid() != 0, reason="starting PostgreSQL needs root")
def test_postgres_module_prints_a_working_url() -> None:
    import psycopg

    was_running = postgres_status().running
    try:
        result = subprocess.run(
            [sys.executable, "-m", "devstack.postgres", "up"],
            capture_output=True,
            text=True,
            timeout=1200,  # a fresh machine installs PostgreSQL first
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == database_url()

        conninfo = database_url().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == ("orderproc", "orderproc")
        assert postgres_status().running
    finally:
        if not was_running:  # leave a server other tests started alone
            postgres_down()
