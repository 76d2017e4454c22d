"""Topic administration: create the topics the workers need, idempotently, with the
replication the settings ask for."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    ConfigResource,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from orderproc.config import Settings
from orderproc.errors import BrokerError
from orderproc.kafka.access import connect, who
from orderproc.kafka.clients import Admin, refuses_access

log = logging.getLogger(__name__)

DLQ_TOPIC_CONFIG = {"retention.ms": str(30 * 24 * 3600 * 1000)}
"""Dead letters wait for human review: keep them a month, not the broker's default week."""


def required_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the workers read or write, with per-topic configuration."""
    topics: dict[str, dict[str, str]] = {settings.orders_topic: {}}
    topics.update({name: {} for name in settings.retry_topics})
    topics[settings.dlq_topic] = dict(DLQ_TOPIC_CONFIG)
    return topics


def max_message_bytes(settings: Settings, topic: str, default: int) -> int:
    """The topic's ``max.message.bytes`` (what the broker accepts), or ``default`` if unknown."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        with Admin(settings.kafka_config()) as admin:
            configs = admin.describe_configs([resource])[resource].result(
                timeout=settings.admin_timeout_s
            )
        return int(configs["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError, TypeError, TimeoutError) as exc:
        why = "no answer in time" if isinstance(exc, TimeoutError) else exc
        log.warning("could not read max.message.bytes of %s (%s); assuming %d", topic, why, default)
        return default


def ensure_topics(
    settings: Settings,
    topics: dict[str, dict[str, str]] | Iterable[str] | None = None,
    *,
    partitions: int | None = None,
    timeout_s: float | None = None,
) -> list[str]:
    """Create missing topics; return the names that were created.

    New topics get ``settings.replication_factor`` replicas and its
    ``min.insync.replicas`` (existing ones keep theirs).

    Raises:
        BrokerError: Kafka refused us, or fewer brokers answer than the replication factor
            needs (one line, before anything is created).
    """
    given = required_topics(settings) if topics is None else topics
    wanted: dict[str, dict[str, str]] = (
        given if isinstance(given, dict) else {name: {} for name in given}
    )
    timeout_s = timeout_s or settings.admin_timeout_s
    conf = settings.kafka_config()
    # Fails in one line, within a second, on wrong credentials or an untrusted certificate.
    admin, metadata = connect(conf, timeout_s)
    with admin:
        existing = set(metadata.topics)  # only those this principal may describe
        isr = {"min.insync.replicas": str(settings.min_insync_replicas)}
        new = [
            NewTopic(
                name,
                num_partitions=partitions or settings.topic_partitions,
                replication_factor=settings.replication_factor,
                config={**isr, **config},
            )
            for name, config in wanted.items()
            if name not in existing
        ]
        if not new:
            return []
        _check_room(settings, len(metadata.brokers))
        created = []
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0]
                if refuses_access(err):
                    raise BrokerError(
                        f"not authorized: {who(conf)} may not create topic {name} "
                        "(it is missing, or this principal may not see it)"
                    ) from exc
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"cannot create topic {name}: {err.str()}") from exc
        log.info("created topics %s", ", ".join(created))
        return created


def _check_room(settings: Settings, brokers: int) -> None:
    factor = settings.replication_factor
    if factor > brokers:
        raise BrokerError(
            f"cannot create topics with replication factor {factor}: the cluster at "
            f"{settings.bootstrap_servers} has {brokers} broker{'s' if brokers != 1 else ''} up "
            f"(set ORDERPROC_REPLICATION_FACTOR to at most {brokers}, or start the others)"
        )
