"""The production settings: one frozen object read from ``ORDERPROC_*`` variables.

Every setting has an embedded default so ``make demo`` works on a laptop with no
configuration at all; production overrides them. Files default to a per-user data
folder (``$XDG_DATA_HOME/orderproc``, else ``~/.local/share/orderproc``), never to
a path next to the installed package. The local dev stack has settings of its own
(``devstack.settings``).
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderproc.logs import LIBRDKAFKA_LOG


def default_data_dir() -> Path:
    """Where files live when no setting says otherwise: the user's XDG data folder."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "orderproc"


class ProcessingGuarantee(StrEnum):
    """What a crash may leave behind (``docs/reliability.md``)."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class RetryMode(StrEnum):
    """How a failing order is retried."""

    BLOCKING = "blocking"
    NON_BLOCKING = "non-blocking"


class GroupType(StrEnum):
    """How the consumer takes its records from Kafka (README, "Scaling out")."""

    CONSUMER = "consumer"
    """A consumer group: partitions assigned to members, offsets per partition, retry
    topics; at most as many busy instances as ``orders`` has partitions."""
    SHARE = "share"
    """A share group (KIP-932, queue mode): records handed out one by one to any number
    of members, acknowledged one by one; a retry is a redelivery."""


class WireFormat(StrEnum):
    """How an order's value is laid out on the wire."""

    SCHEMALESS = "schemaless"
    """Plain Avro, the schema compiled into every process (the original system's)."""
    REGISTRY = "registry"
    """Confluent wire format: magic byte 0, the 4-byte schema id, the Avro body."""


class SubjectStrategy(StrEnum):
    """How the registry subject of a topic's values is named (Confluent's strategies)."""

    TOPIC = "topic"
    """``<topic>-value``"""
    RECORD = "record"
    """``<record full name>``, e.g. ``com.assignment.Order``"""
    TOPIC_RECORD = "topic_record"
    """``<topic>-<record full name>``"""


class Settings(BaseSettings):
    """orderproc settings; environment variables are ``ORDERPROC_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="ORDERPROC_", frozen=True, extra="ignore", allow_inf_nan=False
    )

    # Kafka connection. The default is Kafka's own port on this host; a dev stack on other
    # ports (`orderproc dev up` with ORDERPROC_KAFKA_PORT, or --brokers 3) prints the
    # `export ORDERPROC_BOOTSTRAP_SERVERS=...` line that points clients at it.
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None

    # Topics and groups (the original system's names)
    orders_topic: str = "orders"
    dlq_topic: str = "orders_dlq"
    retry_topic_prefix: str = "orders.retry"
    consumer_group: str = "order-group"
    dlq_group: str = "dlq-group"
    topic_partitions: int = Field(default=3, ge=1)
    # Copies of each partition, and how many of them must hold a record before the broker
    # acknowledges it (the producers use acks=all). The defaults fit one broker; a cluster
    # of three runs 3 and 2: one broker may be lost without stopping writes or losing an
    # acknowledged record (README, "Scaling out"). Both apply to topics `orderproc topics
    # create` makes; existing topics keep theirs.
    replication_factor: int = Field(default=1, ge=1, le=32)
    min_insync_replicas: int = Field(default=1, ge=1, le=32)

    # Schema registry (Confluent-compatible API, e.g. http://host:8081 or Apicurio's
    # http://host:8080/apis/ccompat/v7). The wire format defaults to `registry` when a URL
    # is set, else `schemaless` (the original system's producers keep working).
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_location: str | None = None
    schema_registry_timeout_s: float = Field(default=5.0, gt=0, le=120)
    wire_format: WireFormat | None = None
    subject_strategy: SubjectStrategy = SubjectStrategy.TOPIC
    # Production registers schemas with `orderproc schemas register` (a reviewed step);
    # the dev stack may let the producer register its own.
    schema_auto_register: bool = False
    schema_cache_size: int = Field(default=1000, ge=1)
    """Writer schemas (by id) a consumer keeps parsed; the oldest is dropped past this."""
    registry_backoff_max_s: float = Field(default=30.0, gt=0)
    """The longest a consumer waits between two tries of a registry that does not answer."""

    # Storage: PostgreSQL in production, SQLite under the data folder by default
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None

    # Delivery guarantee. exactly_once: retry/DLQ records and offsets commit in one Kafka
    # transaction per batch, under a transactional id per instance that survives restarts.
    processing_guarantee: ProcessingGuarantee = ProcessingGuarantee.AT_LEAST_ONCE
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=100)
    transaction_timeout_ms: int = Field(default=60000, ge=1000)
    group_type: GroupType = GroupType.CONSUMER
    # Queue mode: share group members per process. A member holding a failing record
    # through its backoff polls nothing (orderproc.worker.share_members); the others go on.
    # More than 1 only with a handler far faster than the record lock allows for: README.
    share_members: int = Field(default=1, ge=1, le=64)

    # Processing rule and retry policy
    price_threshold: float = 100.0
    retry_mode: RetryMode = RetryMode.NON_BLOCKING
    max_attempts: int = Field(default=3, ge=1)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1, le=100)
    backoff_max_s: float = Field(default=30.0, ge=0)
    backoff_jitter: float = Field(default=0.1, ge=0, le=1)

    # Flood breaker: pause when more than this share of the last `flood_window` orders failed
    flood_window: int = Field(default=200, ge=10)
    flood_ratio: float = Field(default=0.8, gt=0, lt=1)
    flood_cooldown_s: float = Field(default=300.0, ge=0)

    # How long a produced record (order, retry or dead letter) may wait for the broker's
    # acknowledgement (librdkafka's delivery.timeout.ms). Long enough to ride out a broker
    # restart or a short outage: records wait in librdkafka's queue, bounded by
    # queue.buffering.max.messages/.kbytes (100,000 records / 1 GiB by default; a full
    # queue makes produce() wait, not fail), and go out when the broker is back. The
    # price is memory and a slow, not silent, failure: an outage longer than this makes
    # the producer count every unacknowledged order and exit 1, and the consumer stop
    # without committing the batch. 30 s lost orders on a 15 s broker restart (issue 8).
    delivery_timeout_ms: int = Field(default=300_000, ge=1000)

    # Service
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    log_json: bool = False
    batch_size: int = Field(default=500, ge=1)
    session_timeout_ms: int = Field(default=45000, ge=1000)
    admin_timeout_s: float = Field(default=15.0, gt=0)
    fetch_wait_max_ms: int = Field(default=100, ge=1, le=5000)
    poll_timeout_s: float = Field(default=0.5, gt=0)
    # How often the DLQ monitor (with --metrics-port) reads the drain's backlog and the store
    monitor_interval_s: float = Field(default=30.0, gt=0)

    # Reports written by `orderproc report` and the orders_dlq_report DAG (default: data_dir)
    reports_dir: Path | None = None

    # Where a DAG task that failed for good is told ({"text": ...}: Slack, Mattermost, Google
    # Chat incoming webhooks); orderproc.airflow.notify. A secret: the URL is the credential.
    alert_webhook_url: SecretStr | None = None

    @field_validator("processing_guarantee", mode="before")
    @classmethod
    def _dashes_too(cls, value: object) -> object:
        return value.replace("-", "_") if isinstance(value, str) else value

    @field_validator("group_type")
    @classmethod
    def _share_at_least_once(cls, value: GroupType, info: ValidationInfo) -> GroupType:
        guarantee = info.data.get("processing_guarantee")
        if value is GroupType.SHARE and guarantee is ProcessingGuarantee.EXACTLY_ONCE:
            raise ValueError(
                "a share group acknowledges records one by one, outside any Kafka "
                "transaction: exactly once needs ORDERPROC_GROUP_TYPE=consumer"
            )
        registry = info.data.get("wire_format") is WireFormat.REGISTRY or (
            info.data.get("wire_format") is None and info.data.get("schema_registry_url")
        )
        if value is GroupType.SHARE and registry:
            # A registry outage holds a partition in a consumer group; a share group could
            # only release the record, and each release spends one of its deliveries.
            raise ValueError(
                "a share group reads the schemaless wire format only: a registry outage "
                "would spend the records' deliveries (use ORDERPROC_GROUP_TYPE=consumer)"
            )
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("bootstrap_servers must not be empty")
        return value

    @field_validator("min_insync_replicas")
    @classmethod
    def _isr_fits(cls, value: int, info: ValidationInfo) -> int:
        factor = info.data.get("replication_factor")
        if factor is not None and value > factor:
            raise ValueError(
                f"must not exceed ORDERPROC_REPLICATION_FACTOR ({factor}): no write could "
                "ever be acknowledged"
            )
        return value

    @field_validator("wire_format")
    @classmethod
    def _registry_needs_url(cls, value: WireFormat | None, info: ValidationInfo) -> Any:
        if value is WireFormat.REGISTRY and not info.data.get("schema_registry_url"):
            raise ValueError("the registry wire format needs ORDERPROC_SCHEMA_REGISTRY_URL")
        return value

    @property
    def effective_wire_format(self) -> WireFormat:
        """``wire_format``, else ``registry`` when a registry URL is set, else ``schemaless``."""
        if self.wire_format is not None:
            return self.wire_format
        return WireFormat.REGISTRY if self.schema_registry_url else WireFormat.SCHEMALESS

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE

    @property
    def transactional_id(self) -> str:
        """This instance's transactional id: a restarted instance reuses it and so fences
        its predecessor (whose open transaction the broker then aborts)."""
        return f"orderproc-{self.consumer_group}-{self.instance_id}"

    @property
    def replay_transactional_id(self) -> str:
        """The replay's transactional id: runs take turns (the store's replay lease), and the
        run that takes the lease fences the last one in Kafka with it."""
        return f"orderproc-replay-{self.orders_topic}"

    def retry_topic(self, attempt: int) -> str:
        """The retry topic that holds records waiting for attempt ``attempt + 1``."""
        return f"{self.retry_topic_prefix}.{attempt}"

    @property
    def retry_topics(self) -> list[str]:
        return [self.retry_topic(i) for i in range(1, self.max_attempts)]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'orderproc.db'}"

    @property
    def effective_reports_dir(self) -> Path:
        return self.reports_dir or self.data_dir / "reports"

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for these settings, plus ``overrides``."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            # librdkafka's lines go through Python logging, repeats quietened (orderproc.logs).
            "logger": LIBRDKAFKA_LOG,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(overrides)
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once from the environment."""
    return Settings()
