"""Kafka clients built by the Kafka provider's hooks from an Airflow connection.

The provider builds the client from the connection's extra (so its callbacks, OAuth
and allow-list rules apply); each hook here lays the keys its job depends on over
that config through ``_get_client``, the provider's own extension point.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
from confluent_kafka import Consumer, Producer

from orderproc.config import Settings
from orderproc.kafka.clients import drain_consumer_overrides, reliable_producer_overrides


class DrainConsumerHook(KafkaConsumerHook):
    """An unsubscribed consumer with the drain's settings on top of the connection's."""

    def __init__(self, settings: Settings, kafka_config_id: str) -> None:
        super().__init__([settings.dlq_topic], kafka_config_id=kafka_config_id)
        self.overrides = drain_consumer_overrides(settings)

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        return super()._get_client({**config, **self.overrides})


class ReplayProducerHook(KafkaProducerHook):
    """An idempotent ``acks=all`` producer on top of the connection's settings."""

    def __init__(self, settings: Settings, kafka_config_id: str) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.overrides = reliable_producer_overrides(settings)

    def _get_client(self, config: dict[str, Any]) -> Producer:
        return super()._get_client({**config, **self.overrides})


def dlq_consumer(settings: Settings, conn_id: str) -> Consumer:
    consumer: Consumer = DrainConsumerHook(settings, conn_id).get_conn
    return consumer


def replay_producer(settings: Settings, conn_id: str) -> Producer:
    producer: Producer = ReplayProducerHook(settings, conn_id).get_producer()
    return producer
