"""Kafka clients built by the Kafka provider's hooks from an Airflow connection.

The provider builds the client from the connection's extra (so its callbacks, OAuth
and allow-list rules apply); each hook here keeps only the keys its kind of client
understands (one ``kafka_default`` connection serves producers and consumers, and
librdkafka warns about every key of the other kind) and lays the keys its job
depends on over them, through ``_get_client``, the provider's own extension point.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
from confluent_kafka import Consumer, Producer

from orderproc.config import Settings
from orderproc.kafka.clients import (
    drain_consumer_overrides,
    replay_producer_overrides,
    replay_reader_overrides,
)
from orderproc.logs import LIBRDKAFKA_LOG

CONSUMER_ONLY = (
    "group.",
    "enable.auto.",
    "auto.offset.reset",
    "auto.commit.",
    "isolation.level",
    "enable.partition.eof",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "fetch.",
    "queued.",
    "check.crcs",
)
PRODUCER_ONLY = (
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "transactional.id",
    "transaction.timeout.ms",
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "compression.",
    "retries",
    "message.send.max.retries",
    "partitioner",
)


def _only(config: dict[str, Any], foreign: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith(foreign)}


class DrainConsumerHook(KafkaConsumerHook):
    """An unsubscribed consumer with the drain's settings on top of the connection's."""

    def __init__(self, settings: Settings, kafka_config_id: str, overrides: Any = None) -> None:
        super().__init__([settings.dlq_topic], kafka_config_id=kafka_config_id)
        self.overrides = overrides or drain_consumer_overrides(settings)

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        ours = {**self.overrides, "logger": LIBRDKAFKA_LOG}
        return super()._get_client({**_only(config, PRODUCER_ONLY), **ours})


class ReplayProducerHook(KafkaProducerHook):
    """The replay's transactional producer on top of the connection's settings."""

    def __init__(self, settings: Settings, kafka_config_id: str) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.overrides = replay_producer_overrides(settings)

    def _get_client(self, config: dict[str, Any]) -> Producer:
        ours = {**self.overrides, "logger": LIBRDKAFKA_LOG}
        return super()._get_client({**_only(config, CONSUMER_ONLY), **ours})


def dlq_consumer(settings: Settings, conn_id: str) -> Consumer:
    consumer: Consumer = DrainConsumerHook(settings, conn_id).get_conn
    return consumer


def replay_reader(settings: Settings, conn_id: str) -> Consumer:
    """A ``read_committed`` consumer the replay reads its own committed copies back with."""
    hook = DrainConsumerHook(settings, conn_id, overrides=replay_reader_overrides(settings))
    consumer: Consumer = hook.get_conn
    return consumer


def replay_producer(settings: Settings, conn_id: str) -> Producer:
    producer: Producer = ReplayProducerHook(settings, conn_id).get_producer()
    return producer
