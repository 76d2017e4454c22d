"""Kafka clients built by the Kafka provider's hooks from an Airflow connection.

The provider builds the client from the connection's extra (so its callbacks, OAuth
and allow-list rules apply); each hook here keeps only the keys its kind of client
understands (one ``kafka_default`` connection serves producers and consumers, and
librdkafka warns about every key of the other kind), lays the keys its job depends
on over them through ``_get_client``, the provider's own extension point, and checks
there, before the client exists, that Kafka accepts the connection's credentials,
certificate and the job's ACLs (``orderproc.kafka.access``): a refused task fails in
about a second with one line, having claimed or committed nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
from confluent_kafka import Consumer, KafkaError, Producer

from orderproc.config import Settings
from orderproc.errors import BrokerError
from orderproc.kafka.access import Access, check_access, drain_access, producer_access
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


def _quiet(conf: dict[str, Any]) -> dict[str, Any]:
    """librdkafka's log lines and errors through logging, a repeat once a minute: a broker
    that goes away after the check would otherwise print an error every few
    milliseconds. An ``error_cb`` the connection names is kept."""
    return {"error_cb": _on_error, **conf, "logger": LIBRDKAFKA_LOG}


def _on_error(err: KafkaError) -> None:
    """A client error: logged quietly; refused credentials stop the job, as the provider's
    own callback does (raised from the client call that served the callback)."""
    if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        raise BrokerError(f"Kafka refused the connection's credentials: {err.str()}")
    LIBRDKAFKA_LOG.error(err)


class DrainConsumerHook(KafkaConsumerHook):
    """An unsubscribed consumer with the drain's settings on top of the connection's."""

    def __init__(
        self,
        settings: Settings,
        kafka_config_id: str,
        timeout_s: float | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__([settings.dlq_topic], kafka_config_id=kafka_config_id)
        self.overrides = overrides or drain_consumer_overrides(settings)
        self.access: Access = drain_access(settings)
        self.timeout_s = timeout_s or settings.admin_timeout_s

    def _get_client(self, config: dict[str, Any]) -> Consumer:
        conf = {**_only(config, PRODUCER_ONLY), **self.overrides}
        check_access(conf, self.access, self.timeout_s)
        return super()._get_client(_quiet(conf))


class ReplayProducerHook(KafkaProducerHook):
    """The replay's transactional producer on top of the connection's settings."""

    def __init__(self, settings: Settings, kafka_config_id: str) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.overrides = replay_producer_overrides(settings)
        self.access = producer_access(settings)
        self.timeout_s = settings.admin_timeout_s

    def _get_client(self, config: dict[str, Any]) -> Producer:
        conf = {**_only(config, CONSUMER_ONLY), **self.overrides}
        check_access(conf, self.access, self.timeout_s)
        return super()._get_client(_quiet(conf))


def dlq_consumer(settings: Settings, conn_id: str, timeout_s: float | None = None) -> Consumer:
    """The drain's consumer from connection ``conn_id``; waits ``timeout_s`` for the broker.

    Raises:
        BrokerError: Kafka refuses the connection's credentials, certificate or the
            drain's ACLs, or does not answer.
    """
    consumer: Consumer = DrainConsumerHook(settings, conn_id, timeout_s).get_conn
    return consumer


def replay_reader(settings: Settings, conn_id: str) -> Consumer:
    """A ``read_committed`` consumer the replay reads its own committed copies back with."""
    hook = DrainConsumerHook(settings, conn_id, overrides=replay_reader_overrides(settings))
    consumer: Consumer = hook.get_conn
    return consumer


def replay_producer(settings: Settings, conn_id: str) -> Producer:
    """The replay's producer from connection ``conn_id`` (same checks as ``dlq_consumer``)."""
    producer: Producer = ReplayProducerHook(settings, conn_id).get_producer()
    return producer
