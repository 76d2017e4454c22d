"""Plain helpers that fixtures in more than one conftest (and module-scoped fixtures,
which cannot use function-scoped ones) share: reading a topic back as downstream sees
it, free loopback ports, bounded waits and reading a worker's metrics. A module, so
conftests import it, never each other."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from orderproc.store.engine import make_engine
from orderproc.store.migrate import upgrade

T = TypeVar("T")


def read_committed(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[Message]:
    """Every committed record of ``topic`` up to its end offsets now, by partition, as a
    ``read_committed`` consumer sees it: an aborted transaction's records are not there,
    and commit markers take offsets but are no records (so a partition ends at EOF)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-back-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": 4_000_000,  # the fuzzed records reach 1.9 MB
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for p in partitions
        }
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                err = msg.error()
                if err is None:
                    out.append(msg)
                    if msg.offset() + 1 >= ends[msg.partition()][1]:
                        todo.discard(msg.partition())
                elif (  # the end of what is committed, past the end seen at the start
                    err.code() == KafkaError._PARTITION_EOF
                    and msg.offset() >= ends[msg.partition()][1]
                ):
                    todo.discard(msg.partition())
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct loopback ports free now (all bound at once, so they differ)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@contextmanager
def migrated_schema(server_url: str, schema: str, *, migrate: bool = True) -> Iterator[str]:
    """A new PostgreSQL schema on ``server_url``, migrated unless ``migrate`` is False: its
    URL, dropped on exit."""
    root = make_engine(server_url)
    with root.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = with_search_path(server_url, schema)
    try:
        if migrate:
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
        yield url
    finally:
        with root.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        root.dispose()


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``schema`` as the connection's search path."""
    parsed = make_url(url)
    query = dict(parsed.query)
    query["options"] = f"-csearch_path={schema}"
    return parsed.set(query=query).render_as_string(hide_password=False)


def wait_until(check: Callable[[], T | None], *, timeout_s: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what``.

    A bound on waiting, never an assertion about speed: the bound is generous.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.25)


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def end_lock_session(engine: Engine) -> None:
    """End the PostgreSQL session that holds the store's replay lock, as an administrator
    (``pg_terminate_backend``) or a cut network would."""
    from orderproc.dlq.lease import advisory_key

    with engine.begin() as conn:
        key = advisory_key(str(conn.scalar(text("SELECT current_schema()"))))
        # With a timeout, pg_terminate_backend waits until the backend has exited (and its
        # locks are free): without one it only signals it, and on a busy machine the next
        # taker could still find the lock held (seen once in a full run).
        ended = conn.scalar(
            text(
                "SELECT count(*) FILTER (WHERE ended) FROM (SELECT pg_terminate_backend(pid, "
                "60000) AS ended FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "classid = :hi AND objid = :lo AND objsubid = 1) AS t"
            ),
            {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
        )
    assert ended == 1, "no session held the replay lock, or it did not end within 60 s"


def wait_for_row_lock_waiter(engine: Engine, timeout_s: float = 60.0) -> None:
    """Until some transaction of this PostgreSQL server waits for another's row lock: a
    forced interleaving's proof that the second writer reached its ``UPDATE``."""
    waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'")

    def look() -> bool:
        with engine.connect() as conn:
            return bool(conn.scalar(waiting))

    wait_until(look, timeout_s=timeout_s, what="a transaction waiting for a row lock")
