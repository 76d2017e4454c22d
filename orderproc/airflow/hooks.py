"""Kafka clients built by the Kafka provider's hooks from an Airflow connection.

The provider builds the client from the connection's extra (so its callbacks, OAuth
and allow-list rules apply); each hook here lays the keys its job depends on over
that config through ``_get_client``, the provider's own extension point, and checks
there, before the client exists, that Kafka accepts the connection's credentials,
certificate and the job's ACLs (``orderproc.kafka.access``): a refused task fails in
about a second with one line, having claimed or committed nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
from confluent_kafka import Consumer, Producer

from orderproc.config import Settings
from orderproc.kafka.access import check_access, drain_access, producer_access
from orderproc.kafka.clients import drain_consumer_overrides, reliable_producer_overrides


class DrainConsumerHook(KafkaConsumerHook):
    """An unsubscribed consumer with the drain's settings on top of the connection's."""

    def __init__(
        self, settings: Settings, kafka_config_id: str, timeout_s: float | None = None
    ) -> None:
        super().__init__([settings.dlq_topic], kafka_config_id=kafka_config_id)
        self.overrides = drain_consumer_overrides(settings)
        self.access = drain_access(settings)
        self.timeout_s = timeout_s or settings.admin_timeout_s

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        conf = {**config, **self.overrides}
        check_access(conf, self.access, self.timeout_s)
        return super()._get_client(conf)


class ReplayProducerHook(KafkaProducerHook):
    """An idempotent ``acks=all`` producer on top of the connection's settings."""

    def __init__(self, settings: Settings, kafka_config_id: str) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.overrides = reliable_producer_overrides(settings)
        self.access = producer_access(settings)
        self.timeout_s = settings.admin_timeout_s

    def _get_client(self, config: dict[str, Any]) -> Producer:
        conf = {**config, **self.overrides}
        check_access(conf, self.access, self.timeout_s)
        return super()._get_client(conf)


def dlq_consumer(settings: Settings, conn_id: str, timeout_s: float | None = None) -> Consumer:
    """The drain's consumer from connection ``conn_id``; waits ``timeout_s`` for the broker.

    Raises:
        BrokerError: Kafka refuses the connection's credentials, certificate or the
            drain's ACLs, or does not answer.
    """
    consumer: Consumer = DrainConsumerHook(settings, conn_id, timeout_s).get_conn
    return consumer


def replay_producer(settings: Settings, conn_id: str) -> Producer:
    """The replay's producer from connection ``conn_id`` (same checks as ``dlq_consumer``)."""
    producer: Producer = ReplayProducerHook(settings, conn_id).get_producer()
    return producer
