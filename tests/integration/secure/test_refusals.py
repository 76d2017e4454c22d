"""Refused by the secured broker: one clear line, no password, nothing written or committed.

Three causes for every command and DAG task function: a wrong password, a broker
certificate the client's CA did not sign, and a principal without any ACL. Then a
consumer whose principal cannot write the DLQ, refused at start and, once its
DLQ write ACL is revoked while it runs, stopping with its offsets uncommitted.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from pydantic import SecretStr
from sqlalchemy import Engine, func, inspect, select

from devstack.airflow import database_connection, kafka_connection
from devstack.kafka_security import allow, app_acls, grant, revoke, upsert_user
from orderproc.airflow.tasks import drain_dlq, replay_dlq
from orderproc.config import Settings, get_settings
from orderproc.dlq.store import DlqStore
from orderproc.errors import BrokerError, DeliveryError
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine
from orderproc.store.migrate import upgrade
from orderproc.store.processed import OrderRepository
from orderproc.store.tables import ProcessedOrder
from orderproc.worker.consumer import OrderConsumer

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]
RunCli = Callable[..., subprocess.CompletedProcess[str]]

NO_OFFSET = -1001
CAUSES = ("wrong-password", "untrusted-certificate", "no-acl")
COMMANDS = {
    "produce": ("produce", "--count", "1", "--rate", "0"),
    "consume": ("consume", "--idle-exit", "2"),
    "dlq tail": ("dlq", "tail", "--from-beginning", "--idle-exit", "2"),
    "topics create": ("topics", "create"),
}
WRONG = f"wrong-{secrets.token_urlsafe(12)}"


def refused_as(cause: str, settings: Settings, secure_kafka: Any) -> Settings:
    """``settings`` (user orderproc) changed so that the broker refuses them for ``cause``."""
    if cause == "wrong-password":
        return settings.model_copy(update={"sasl_password": SecretStr(WRONG)})
    if cause == "untrusted-certificate":
        return settings.model_copy(update={"ssl_ca_location": str(secure_kafka.other_ca)})
    return secure_kafka.as_user(settings, "nobody")


def cause_line(cause: str, secure_kafka: Any) -> str | None:
    """The line for ``cause`` when it is the same for every job (None for missing ACLs)."""
    where = secure_kafka.bootstrap
    if cause == "wrong-password":
        return f"wrong credentials: Kafka at {where} rejected user 'orderproc' (SCRAM-SHA-512)"
    if cause == "untrusted-certificate":
        return (
            f"untrusted broker certificate: Kafka at {where} presented a certificate that "
            f"the CA in ssl.ca.location ({secure_kafka.other_ca}) did not sign"
        )
    return None


def no_acl_line(job: str, s: Settings) -> str:
    """What user ``nobody`` is told it may not do, per job."""
    retries = ", ".join(s.retry_topics)
    may_not = {
        "produce": f"write to topic {s.orders_topic}",
        "replay": f"write to topic {s.orders_topic}",
        "consume": (
            f"read topics {s.orders_topic}, {retries}; "
            f"write to topics {retries}, {s.dlq_topic}; use consumer group {s.consumer_group}"
        ),
        "dlq tail": f"read topic {s.dlq_topic}; use consumer group {s.dlq_group}",
        "drain": f"read topic {s.dlq_topic}; use consumer group {s.dlq_group}.drain",
        "topics create": (
            f"create topic {s.orders_topic} (it is missing, or this principal may not see it)"
        ),
    }[job]
    return f"not authorized: user 'nobody' may not {may_not}"


def processed_rows(settings: Settings) -> int:
    engine = make_engine(settings.effective_database_url)
    try:
        if not inspect(engine).has_table(ProcessedOrder.__tablename__):
            return 0
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(ProcessedOrder)) or 0)
    finally:
        engine.dispose()


def send_order(settings: Settings, order: Order) -> None:
    """One order in the orders topic, written as user orderproc."""
    producer = Producer(settings.kafka_config())
    producer.produce(settings.orders_topic, key=order.order_id.encode(),
                     value=SchemalessSerde().encode(order))  # fmt: skip
    assert producer.flush(30) == 0


@pytest.mark.parametrize("cause", CAUSES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_refused_command_says_why_in_one_line_and_writes_nothing(
    command: str,
    cause: str,
    secure_kafka: Any,
    secure_settings: Settings,
    run_cli: RunCli,
    dead_letter: Helper,
    make_orders: Helper,
    no_password_in: Helper,
) -> None:
    settings = secure_settings
    send_order(settings, Order("o-in-orders", "Laptop", 150.0))
    dead_letter(settings, make_orders(1))

    result = run_cli(refused_as(cause, settings, secure_kafka), *COMMANDS[command])

    line = cause_line(cause, secure_kafka) or no_acl_line(command, settings)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"orderproc: error: {line}"]
    assert result.stdout == ""
    no_password_in(result.stdout, result.stderr)
    assert WRONG not in result.stderr
    ends = [secure_kafka.end_offset(t) for t in (settings.orders_topic, settings.dlq_topic,
                                                 *settings.retry_topics)]  # fmt: skip
    assert ends == [1, 1] + [0] * len(settings.retry_topics)
    assert secure_kafka.committed(settings.consumer_group, settings.orders_topic) == [NO_OFFSET]
    assert secure_kafka.committed(settings.dlq_group, settings.dlq_topic) == [NO_OFFSET]
    assert processed_rows(settings) == 0


@pytest.fixture
def task_env(
    secure_settings: Settings, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Settings], None]]:
    """``task_env(settings)``: the DAG tasks' environment, with ``kafka_default`` built from
    ``settings`` as the devstack builds it and the store as ``orderproc_db``."""

    def setup(kafka: Settings) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", kafka_connection(kafka))
        monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", database_connection(sqlite_url))
        for name in ("orders_topic", "dlq_topic", "dlq_group", "consumer_group"):
            monkeypatch.setenv(f"ORDERPROC_{name.upper()}", str(getattr(secure_settings, name)))
        get_settings.cache_clear()

    yield setup
    get_settings.cache_clear()


@pytest.mark.parametrize("cause", CAUSES)
def test_a_refused_drain_task_stores_and_commits_nothing(
    cause: str,
    secure_kafka: Any,
    secure_settings: Settings,
    task_env: Callable[[Settings], None],
    sqlite_url: str,
    dead_letter: Helper,
    make_orders: Helper,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    no_password_in: Helper,
) -> None:
    settings = secure_settings
    dead_letter(settings, make_orders(2))
    task_env(refused_as(cause, settings, secure_kafka))

    with pytest.raises(BrokerError) as refused:
        drain_dlq({"max_messages": 100, "timeout_s": 10}, run_id="manual__refused")

    assert str(refused.value) == (cause_line(cause, secure_kafka) or no_acl_line("drain", settings))
    assert DlqStore(make_engine(sqlite_url)).list_events(limit=10) == []
    assert secure_kafka.committed(f"{settings.dlq_group}.drain", settings.dlq_topic) == [NO_OFFSET]
    out = capsys.readouterr()
    no_password_in(out.out, out.err, caplog.text)


@pytest.mark.parametrize("cause", CAUSES)
def test_a_refused_replay_task_claims_and_publishes_nothing(
    cause: str,
    secure_kafka: Any,
    secure_settings: Settings,
    task_env: Callable[[Settings], None],
    sqlite_url: str,
    seed_dlq: Helper,
    make_orders: Helper,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    no_password_in: Helper,
) -> None:
    settings = secure_settings
    store = DlqStore(make_engine(sqlite_url))
    ids = seed_dlq(store, make_orders(2))
    store.approve(ids, actor="alice")
    task_env(refused_as(cause, settings, secure_kafka))

    with pytest.raises(BrokerError) as refused:
        replay_dlq({"max_messages": 10, "dry_run": False}, run_id="manual__refused")

    assert str(refused.value) == (
        cause_line(cause, secure_kafka) or no_acl_line("replay", settings)
    )
    rows = store.list_events(limit=10)
    assert [(r.status, r.claimed_by, r.replay_count) for r in rows] == [("approved", None, 0)] * 2
    assert secure_kafka.end_offset(settings.orders_topic) == 0
    out = capsys.readouterr()
    no_password_in(out.out, out.err, caplog.text)


def test_a_consumer_that_may_not_write_the_dlq_is_refused_before_it_reads(
    secure_kafka: Any,
    secure_settings: Settings,
    grant_reader: Callable[[Settings], Settings],
    run_cli: RunCli,
    no_password_in: Helper,
) -> None:
    settings = secure_settings.model_copy(update={"max_attempts": 1})
    send_order(settings, Order("too-dear", "Laptop", 150.0))

    result = run_cli(grant_reader(settings), "consume", "--idle-exit", "2")

    assert result.returncode == 1
    line = f"not authorized: user 'reader' may not write to topic {settings.dlq_topic}"
    assert result.stderr.strip().splitlines() == [f"orderproc: error: {line}"]
    no_password_in(result.stdout, result.stderr)
    assert secure_kafka.committed(settings.consumer_group, settings.orders_topic) == [NO_OFFSET]
    assert secure_kafka.end_offset(settings.dlq_topic) == 0
    assert processed_rows(settings) == 0


def test_a_consumer_whose_dlq_write_is_revoked_stops_without_committing_the_batch(
    secure_kafka: Any, secure_settings: Settings, sqlite_url: str
) -> None:
    # A user of its own with orderproc's ACLs: revoking one touches no other test.
    user = f"revocable-{secrets.token_hex(4)}"
    secure_kafka.passwords[user] = secrets.token_urlsafe(16)
    upsert_user(secure_kafka.admin, user, secure_kafka.passwords[user])
    settings = secure_settings.model_copy(update={"max_attempts": 1, "database_url": sqlite_url})
    grant(secure_kafka.admin, app_acls(settings, principal=f"User:{user}"))
    engine: Engine = make_engine(sqlite_url)
    upgrade(engine)
    consumer = OrderConsumer(secure_kafka.as_user(settings, user), OrderRepository(engine),
                             echo=None)  # fmt: skip
    failure: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(idle_exit_s=60)
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    send_order(settings, Order("cheap", "Laptop", 10.0))
    deadline = time.monotonic() + 60
    while processed_rows(settings) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    dlq_write = allow(f"User:{user}", ResourceType.TOPIC, settings.dlq_topic,
                      ResourcePatternType.LITERAL, AclOperation.WRITE)  # fmt: skip
    revoke(secure_kafka.admin, [dlq_write])
    send_order(settings, Order("too-dear", "Laptop", 150.0))
    worker.join(90)

    assert not worker.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], DeliveryError)
    assert "Topic authorization failed" in str(failure[0])
    assert settings.dlq_topic in str(failure[0]) and "\n" not in str(failure[0])
    assert processed_rows(settings) == 1
    # The cheap order's offset was committed; the dear one's batch never was.
    assert secure_kafka.committed(settings.consumer_group, settings.orders_topic) == [1]
    assert secure_kafka.end_offset(settings.dlq_topic) == 0
    assert secure_kafka.passwords[user] not in str(failure[0])
    engine.dispose()
