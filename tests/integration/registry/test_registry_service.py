"""The registry as users meet it: a reader we did not write decodes ``orders``, the dev stack's
registry keeps its ids across a restart, ``dev status``/``down`` know it, and the access
check refuses in one line before anything is produced."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from devstack.registry import SchemaRegistry
from orderproc.config import Settings
from orderproc.serde import OrderSchema, local_schema
from orderproc.serde.registry import RegistryClient
from orderproc.serde.subjects import register
from tests.conftest import free_port
from tests.registry_support import V2, Subject

pytestmark = pytest.mark.integration


def test_confluent_kafkas_own_deserializer_reads_what_orderproc_produce_wrote(
    registry_settings: Callable[..., Settings],
    versions: Callable[..., Subject],
    run_cli: Callable[..., Any],
    read_all: Callable[..., list[Message]],
    schema_registry: str,
) -> None:
    settings = registry_settings()
    subject = versions(settings, v1=local_schema().text)

    done = run_cli(settings, "produce", "--count", "20", "--rate", "0", "--quiet")

    assert done.returncode == 0, done.stderr
    records = read_all(settings.orders_topic)
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": schema_registry}))
    ctx = SerializationContext(settings.orders_topic, MessageField.VALUE)
    orders = [deserializer(m.value(), ctx) for m in records]
    assert len(orders) == 20
    assert all(set(o) == {"orderId", "product", "price"} for o in orders)
    assert {m.value()[:5] for m in records} == {b"\x00" + subject.ids["v1"].to_bytes(4, "big")}
    assert [o["orderId"] for o in orders] == [m.key().decode() for m in records]


def test_the_producer_refuses_in_one_line_when_its_schema_is_not_registered(
    registry_settings: Callable[..., Settings], run_cli: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:  # fmt: skip
    settings = registry_settings()
    subject = f"{settings.orders_topic}-value"

    missing = run_cli(settings, "produce", "--count", "1", "--quiet")
    closed = settings.model_copy(update={"schema_registry_url": f"http://127.0.0.1:{free_port()}"})
    down = run_cli(closed, "produce", "--count", "1", "--quiet")

    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"orderproc: error: subject {subject} is not registered at the schema registry at "
        f"{settings.schema_registry_url}: register it with `orderproc schemas register`"
    ]
    assert down.returncode == 1
    assert down.stderr.strip().splitlines() == [
        f"orderproc: error: cannot reach the schema registry at "
        f"{closed.schema_registry_url}: Connection refused"
    ]
    assert read_all(settings.orders_topic) == []


def test_the_dev_stack_registry_keeps_its_ids_across_a_restart_and_dev_status_down_know_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    registry = SchemaRegistry(home=tmp_path, port=port)  # the archive: the checkout's .devstack
    registry.up()
    try:
        client = RegistryClient(registry.url)
        first = register(client, "orders-value", local_schema())
        second = register(client, "orders-value", OrderSchema.of(V2))
        registry.down()
        assert not registry.answers(1.0)
        registry.up()
        assert client.lookup("orders-value", V2).schema_id == second.schema_id
        assert client.schema(first.schema_id)[0] == local_schema().text
        assert client.versions("orders-value") == [1, 2]
        pid = registry.running_pid()

        status, down, after = (_dev(tmp_path, port, verb) for verb in ("status", "down", "status"))
    finally:
        registry.down()
    url = f"url=http://127.0.0.1:{port}/apis/ccompat/v7"
    assert f"registry apicurio 3.0.9 running pid={pid} {url}" in status.stdout.splitlines()
    assert f"registry stopped pid={pid}" in down.stdout.splitlines()
    assert f"registry apicurio 3.0.9 stopped {url}" in after.stdout.splitlines()


def _dev(devstack: Path, registry_port: int, verb: str) -> subprocess.CompletedProcess[str]:
    """``orderproc dev <verb>`` on a dev stack folder of its own (no broker of it runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
    env |= {"ORDERPROC_DEVSTACK_DIR": str(devstack), "ORDERPROC_REGISTRY_PORT": str(registry_port),
            "ORDERPROC_KAFKA_PORT": str(free_port())}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "orderproc", "dev", verb], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
