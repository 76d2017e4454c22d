"""Helpers shared by the test modules (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import os
import time
import uuid
from enum import Enum
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from orderproc.config import Settings


def drain_topic(
    consumer: Consumer, topic: str, expected: int, timeout_s: float = 60.0
) -> list[Any]:
    """Read ``expected`` records from ``topic`` (bounded by ``timeout_s``)."""
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(expected - len(out), timeout=1.0):
            if msg.error() is None:
                out.append(msg)
    return out


def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` up to its current end (high watermarks), in partition order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-all-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error() is None:
                    out.append(msg)
                    if msg.offset() + 1 >= ends[msg.partition()][1]:
                        todo.discard(msg.partition())
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = value.value if isinstance(value, Enum) else str(value)
        env[f"ORDERPROC_{name.upper()}"] = text
    return env
