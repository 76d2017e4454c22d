"""A secured broker (SASL_SSL, SCRAM-SHA-512, ACLs) for the session, its users and helpers.

One broker per session, started as ``orderproc dev up --secure`` starts it, on free
ports in a scratch devstack folder, with the jars of the default devstack folder
(fetched once, shared); it is stopped by pid at the end. Each test gets topics and
groups of its own, created by the admin, with the ``orderproc`` user's ACLs for
exactly those (``SecureKafkaBroker.provision``). Two more users exist: ``nobody``
(no ACL at all) and ``reader`` (ACLs granted per test by ``grant_reader``).
"""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from pydantic import SecretStr

from devstack.kafka_secure import SecureKafkaBroker
from devstack.kafka_security import allow, grant, upsert_user
from devstack.maven import kafka_home
from devstack.settings import DevstackSettings
from devstack.tls import cert_pem, make_ca
from orderproc.config import Settings
from orderproc.kafka.clients import Admin
from tests.support import free_ports

RunCli = Callable[..., subprocess.CompletedProcess[str]]
_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


@dataclass(frozen=True)
class SecureKafka:
    """The session's secured broker, as its admin sees it."""

    devstack: DevstackSettings
    libs: Path
    broker: SecureKafkaBroker
    admin: Admin
    other_ca: Path
    """A CA that did not sign the broker's certificate."""
    passwords: dict[str, str]
    """Every password of the session, by user (for 'never printed' checks)."""

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def provision(self, app: Settings) -> Settings:
        """Topics and ``orderproc`` ACLs for ``app``'s names; ``app`` as user orderproc."""
        broker = SecureKafkaBroker(self.devstack, libs_dir=self.libs, app=app)
        broker.provision()
        return broker.client_settings()

    def as_user(self, settings: Settings, user: str) -> Settings:
        """``settings`` with another user's name and password."""
        return settings.model_copy(
            update={"sasl_username": user, "sasl_password": SecretStr(self.passwords[user])}
        )

    def end_offset(self, topic: str) -> int:
        """How many records ``topic`` holds (all partitions)."""
        consumer = Consumer({**self.broker.admin_config(), "group.id": "peek"})
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            )
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> list[int]:
        """The committed offset of each partition of ``topic`` in ``group`` (-1001: none).

        Asked again while the group coordinator is not ready (a fresh broker creates
        ``__consumer_offsets`` on the first request).
        """
        consumer = Consumer({**self.broker.admin_config(), "group.id": group})
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            deadline = time.monotonic() + 30
            while True:
                try:
                    return [tp.offset for tp in consumer.committed(tps, timeout=10)]
                except KafkaException as exc:
                    if exc.args[0].code() not in _NOT_READY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            consumer.close()

    def read(self, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
        """Read ``expected`` records of ``topic`` from the beginning, as admin."""
        consumer = Consumer(
            {**self.broker.admin_config(), "group.id": f"read-{uuid.uuid4().hex[:8]}",
             "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )  # fmt: skip
        try:
            consumer.subscribe([topic])
            out: list[Any] = []
            for _ in range(int(timeout_s)):
                if len(out) >= expected:
                    break
                out += [m for m in consumer.consume(expected, timeout=1.0) if m.error() is None]
            return out
        finally:
            consumer.close()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """The session's secured broker (started once, stopped by pid at the end)."""
    port, controller_port = free_ports(2)
    devstack = DevstackSettings(
        devstack_dir=tmp_path_factory.mktemp("secure-devstack"),
        kafka_port=port,
        kafka_controller_port=controller_port,
    )
    libs = kafka_home(DevstackSettings().devstack_dir) / "libs"
    broker = SecureKafkaBroker(devstack, libs_dir=libs, app=Settings())
    broker.up()
    try:
        with Admin(broker.admin_config()) as admin:
            creds = broker.credentials()
            passwords = {
                "admin": creds.admin,
                "orderproc": creds.app,
                "controller": creds.controller,
            }
            for user in ("nobody", "reader"):
                passwords[user] = secrets.token_urlsafe(16)
                upsert_user(admin, user, passwords[user])
            other_ca = devstack.devstack_dir / "other-ca.pem"
            other_ca.write_bytes(cert_pem(make_ca("somebody else's CA")[1]))
            yield SecureKafka(devstack, libs, broker, admin, other_ca, passwords)
    finally:
        broker.down()


@pytest.fixture
def secure_settings(secure_kafka: SecureKafka, tmp_path: Path) -> Settings:
    """This test's topics (one partition each) and groups, as user ``orderproc``."""
    uid = uuid.uuid4().hex[:10]
    app = Settings(
        orders_topic=f"orders-{uid}",
        dlq_topic=f"orders_dlq-{uid}",
        retry_topic_prefix=f"orders-{uid}.retry",
        consumer_group=f"order-group-{uid}",
        dlq_group=f"dlq-group-{uid}",
        topic_partitions=1,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'orderproc.db'}",
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        backoff_jitter=0.0,
        poll_timeout_s=0.2,
    )
    return secure_kafka.provision(app)


@pytest.fixture
def grant_reader(secure_kafka: SecureKafka) -> Callable[[Settings], Settings]:
    """``grant_reader(settings)``: ``reader`` may read the orders topic in the consumer's group,
    and write nothing; returns ``settings`` as reader."""

    def grant_for(settings: Settings) -> Settings:
        principal = "User:reader"
        grant(
            secure_kafka.admin,
            [
                allow(principal, ResourceType.TOPIC, settings.orders_topic,
                      ResourcePatternType.LITERAL, AclOperation.READ),
                allow(principal, ResourceType.GROUP, settings.consumer_group,
                      ResourcePatternType.LITERAL, AclOperation.READ),
            ],
        )  # fmt: skip
        return secure_kafka.as_user(settings, "reader")

    return grant_for


@pytest.fixture
def no_password_in(secure_kafka: SecureKafka) -> Callable[..., None]:
    """``no_password_in(*texts)``: none of the session's passwords appears in any text."""

    def check(*texts: str) -> None:
        for text in texts:
            for user, password in secure_kafka.passwords.items():
                assert password not in text, f"{user}'s password was printed"

    return check
