"""No single record stops the stream: each hostile record of issue 8's table, written by a
client we did not write (kcat), is dead-lettered (or its stale headers ignored), the good
orders behind it are processed, and the consumer is still running afterwards."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import Message
from sqlalchemy import text

from orderproc.config import RetryMode, Settings
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import open_engine
from orderproc.store.processed import OrderRepository
from orderproc.worker.consumer import ConsumerStats, OrderConsumer

pytestmark = pytest.mark.integration

SERDE = SchemalessSerde()


class Running:
    """An ``OrderConsumer`` running on a thread, as a service would."""

    def __init__(self, consumer: OrderConsumer) -> None:
        self.consumer = consumer
        self.stats: ConsumerStats | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.consumer.run()
        except BaseException as exc:  # reported by the test, not lost on the thread
            self.error = exc


@pytest.fixture
def running_consumer() -> Iterator[Callable[..., Any]]:
    """``with running_consumer(settings, **kwargs) as run:`` a consumer on a thread; on exit it
    is stopped and joined, and an exception it raised fails the test."""
    started: list[Running] = []

    @contextmanager
    def start(settings: Settings, **kwargs: Any) -> Iterator[Running]:
        with open_engine(settings.effective_database_url) as engine:
            from orderproc.store.migrate import upgrade

            upgrade(engine)
            run = Running(OrderConsumer(settings, OrderRepository(engine), echo=None, **kwargs))
            started.append(run)
            run.thread.start()
            try:
                yield run
            finally:
                run.consumer.stop()
                run.thread.join(60)
        assert not run.thread.is_alive(), "the consumer did not stop"
        assert run.error is None, f"the consumer failed: {run.error!r}"

    yield start


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0, what: str = "") -> None:
    """Poll ``check`` until it holds (a bounded wait on an observable condition)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def processed_ids(settings: Settings) -> set[str]:
    with open_engine(settings.effective_database_url) as engine:
        return OrderRepository(engine).processed_ids()


def order_bytes(order_id: str, price: float = 20.0, product: str = "item1") -> bytes:
    return SERDE.encode_record({"orderId": order_id, "product": product, "price": price})


def dlq_envelopes(read_all: Callable[..., list[Message]], settings: Settings) -> list[Any]:
    return [json.loads(m.value()) for m in read_all(settings.dlq_topic)]


def test_a_header_name_that_is_not_utf8_dead_letters_that_record_only(
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = make_settings()
    bad = order_bytes("bad-header")
    kcat(settings, order_bytes("before"), headers=((b"trace", b"1"),))
    kcat(settings, bad, headers=((b"ok", b"1"), (b"\xff\xfe", b"v"), (b"also", b"2")))
    kcat(settings, bad, headers=((b"\xc3\x28", b"alone"),))
    kcat(settings, order_bytes("after"), headers=((b"trace", b"2"),))

    with running_consumer(settings) as run:
        wait_for(lambda: {"before", "after"} <= processed_ids(settings), what="the good orders")
        wait_for(lambda: run.consumer.stats.dead_lettered == 2, what="two dead letters")
        assert run.thread.is_alive()  # still consuming

    envelopes = dlq_envelopes(read_all, settings)
    assert len(envelopes) == 2
    for envelope in envelopes:
        assert envelope["error"]["category"] == "deserialization"
        assert "header name is not valid UTF-8" in envelope["reason"]
        assert base64.b64decode(envelope["raw_value_b64"]) == bad


@pytest.mark.parametrize("size", [900_000, 1_040_000])
def test_a_value_near_the_max_message_size_is_dead_lettered_in_a_form_that_fits(
    size: int,
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = make_settings()
    huge = bytes(range(256)) * (size // 256)
    kcat(settings, huge)
    kcat(settings, order_bytes("behind-the-big-one"))

    with running_consumer(settings) as run:
        wait_for(lambda: "behind-the-big-one" in processed_ids(settings), what="the good order")
        wait_for(lambda: run.consumer.stats.dead_lettered == 1, what="the dead letter")

    [msg] = read_all(settings.dlq_topic)
    envelope = json.loads(msg.value())
    assert len(msg.value()) < 1_000_000
    assert envelope["raw_value_truncated"] is True
    assert envelope["raw_value_length"] == len(huge)
    assert envelope["raw_value_sha256"] == hashlib.sha256(huge).hexdigest()
    kept = base64.b64decode(envelope["raw_value_b64"])
    assert huge.startswith(kept) and len(kept) > 100_000  # a useful prefix, byte for byte


def test_valid_avro_with_a_huge_cjk_product_is_dead_lettered_and_fits(
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = make_settings()
    value = order_bytes("cjk", product="注文" * 150_000)  # 900 KB of UTF-8; JSON escapes it 2x
    kcat(settings, value)
    kcat(settings, order_bytes("after-cjk"))

    with running_consumer(settings) as run:
        wait_for(lambda: "after-cjk" in processed_ids(settings), what="the good order")
        wait_for(lambda: run.consumer.stats.dead_lettered == 1, what="the dead letter")

    [envelope] = dlq_envelopes(read_all, settings)
    assert envelope["error"]["category"] == "validation"
    assert "the store holds 200" in envelope["reason"]
    assert envelope["raw_value_sha256"] == hashlib.sha256(value).hexdigest()


@pytest.mark.parametrize(
    ("order_id", "product", "why"),
    [
        ("long-product", "p" * 201, "product is 201 characters long"),
        ("o" * 201, "item1", "orderId is 201 characters long"),
        ("nul-product", "item\x001", "product contains a NUL character"),
    ],
)
def test_an_order_the_store_cannot_hold_is_dead_lettered_before_any_write(
    order_id: str,
    product: str,
    why: str,
    make_settings: Callable[..., Settings],
    pg_url: str,
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = make_settings(database_url=pg_url)
    kcat(settings, order_bytes(order_id, product=product))
    kcat(settings, order_bytes("then-a-good-one"))

    with running_consumer(settings) as run:
        wait_for(lambda: "then-a-good-one" in processed_ids(settings), what="the good order")
        wait_for(lambda: run.consumer.stats.dead_lettered == 1, what="the dead letter")

    [envelope] = dlq_envelopes(read_all, settings)
    assert envelope["error"]["category"] == "validation"
    assert why in envelope["reason"]


def test_a_row_the_database_refuses_is_dead_lettered_and_the_batch_is_stored(
    make_settings: Callable[..., Settings],
    pg_url: str,
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = make_settings(database_url=pg_url)
    with open_engine(pg_url) as engine, engine.begin() as conn:
        # A rule the order validation does not know: only the database can refuse this row.
        conn.execute(text("ALTER TABLE processed_orders ADD CHECK (product <> 'forbidden')"))
    for i in range(20):
        kcat(settings, order_bytes(f"good-{i}"))
        if i == 7:
            kcat(settings, order_bytes("refused", product="forbidden"))

    with running_consumer(settings) as run:
        wait_for(lambda: len(processed_ids(settings)) == 20, what="the twenty good orders")
        wait_for(lambda: run.consumer.stats.dead_lettered == 1, what="the dead letter")
        kcat(settings, order_bytes("a-later-batch"))  # the staging table still works after
        wait_for(lambda: "a-later-batch" in processed_ids(settings), what="a later batch")

    [envelope] = dlq_envelopes(read_all, settings)
    assert envelope["failed_order"]["orderId"] == "refused"
    assert envelope["error"]["category"] == "validation"
    assert "the store refused this order" in envelope["reason"]


def test_stale_orderproc_headers_on_the_main_topic_are_ignored(
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
) -> None:
    settings = make_settings(max_attempts=3)
    stale = (
        (b"orderproc.attempts", b"4"),
        (b"orderproc.source.topic", b"somewhere-else"),
        (b"orderproc.source.partition", b"99999999999999"),
        (b"orderproc.source.offset", b"5"),
        (b"orderproc.first.failure.ms", b"1"),
    )
    kcat(settings, order_bytes("republished", price=150.0), headers=stale)
    kcat(settings, order_bytes("negative", price=20.0), headers=((b"orderproc.attempts", b"-5"),))

    with running_consumer(settings) as run:
        wait_for(lambda: "negative" in processed_ids(settings), what="the cheap order")
        wait_for(lambda: run.consumer.stats.dead_lettered == 1, timeout_s=90, what="the DLQ")

    [msg] = read_all(settings.dlq_topic)
    envelope = json.loads(msg.value())
    assert envelope["attempts"] == 3  # its own retries, not the stale header's count
    assert envelope["source"]["topic"] == settings.orders_topic
    assert envelope["source"]["offset"] == 0
    headers = dict(msg.headers())
    assert headers["orderproc.source.topic"] == settings.orders_topic.encode()


def test_absurd_provenance_on_a_retry_topic_is_not_trusted(
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
) -> None:
    settings = make_settings(max_attempts=3)
    headers = (
        (b"orderproc.attempts", b"-5"),
        (b"orderproc.source.topic", settings.orders_topic.encode()),
        (b"orderproc.source.partition", b"99999999999999"),
        (b"orderproc.source.offset", b"3"),
        (b"orderproc.retry.due.ms", b"99999999999999"),  # year 5138: never due if trusted
    )
    kcat(settings, order_bytes("from-retry", price=20.0), topic=settings.retry_topic(1),
         headers=headers)  # fmt: skip

    with running_consumer(settings):
        wait_for(lambda: "from-retry" in processed_ids(settings), what="the retried order")

    with open_engine(settings.effective_database_url) as engine, engine.connect() as conn:
        row = conn.execute(text("SELECT attempts, source_topic, source_partition "
                                "FROM processed_orders")).one()  # fmt: skip
    assert row.attempts == 2  # read from retry topic 1: one attempt made, this is the second
    assert (row.source_topic, row.source_partition) == (settings.retry_topic(1), 0)


def test_blocking_retries_never_outlive_the_poll_interval_and_commit_finished_work(
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    running_consumer: Callable[..., Any],
    read_all: Callable[..., list[Message]],
    make_consumer: Callable[..., Any],
) -> None:
    # Six failing orders with 2 s + 2 s of backoff each: 24 s of waiting on one partition,
    # well beyond a 10 s max.poll.interval.ms. Sleeping in the loop would get the member evicted.
    settings = make_settings(
        retry_mode=RetryMode.BLOCKING,
        max_attempts=3,
        backoff_initial_s=2.0,
        backoff_multiplier=1.0,
        backoff_max_s=2.0,
        session_timeout_ms=6000,
    )
    expected_good = set()
    for i in range(6):
        kcat(settings, order_bytes(f"bad-{i}", price=150.0))
        kcat(settings, order_bytes(f"good-{i}"))
        expected_good.add(f"good-{i}")
    overrides = {"max.poll.interval.ms": 10_000}
    assigned: list[int] = []

    with running_consumer(settings, consumer_overrides=overrides) as run:
        wait_for(lambda: "good-0" in processed_ids(settings), timeout_s=30, what="good-0")
        # good-0 is stored while bad-1 is still waiting: finished work is not held back.
        assert "good-5" not in processed_ids(settings)
        assigned.append(len(run.consumer.partitions))
        wait_for(lambda: expected_good <= processed_ids(settings), timeout_s=120,
                 what="every good order")  # fmt: skip
        wait_for(lambda: run.consumer.stats.dead_lettered == 6, what="six dead letters")
        assigned.append(len(run.consumer.partitions))

    assert assigned == [3, 3]  # orders + two retry topics, never revoked by an eviction
    assert len(read_all(settings.dlq_topic)) == 6
    group = make_consumer(**{"group.id": settings.consumer_group})
    from confluent_kafka import TopicPartition

    [tp] = group.committed([TopicPartition(settings.orders_topic, 0)], timeout=10)
    assert tp.offset == 12  # everything committed


def test_a_fresh_consumer_whose_first_batch_holds_hundreds_of_good_orders_keeps_running(
    make_settings: Callable[..., Settings],
    make_producer: Callable[..., Any],
    running_consumer: Callable[..., Any],
) -> None:
    settings = make_settings()  # flood window 200: a first batch of 300 overflows it at once
    producer = make_producer()
    for i in range(300):
        producer.produce(settings.orders_topic, value=SERDE.encode(Order(f"g-{i}", "item1", 9.0)))
    assert producer.flush(30) == 0

    with running_consumer(settings) as run:
        wait_for(lambda: len(processed_ids(settings)) == 300, what="300 orders")
        assert run.thread.is_alive() and run.error is None


def test_dozens_of_unreadable_header_names_never_crash_the_process(
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    settings_env: Callable[[Settings], dict[str, str]],
    read_all: Callable[..., list[Message]],
) -> None:
    # Reading such headers with a plain msg.headers() in a loop segfaults once CPython has
    # specialised the call (about a dozen calls in): run the real CLI in its own process.
    settings = make_settings()
    for i in range(60):
        kcat(settings, order_bytes(f"bad-{i}"), headers=((b"\xff\xfe", b"v"),))
    kcat(settings, order_bytes("survivor"))

    done = subprocess.run(
        [sys.executable, "-m", "orderproc", "consume", "--idle-exit", "3", "--quiet"],
        env=settings_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-2000:]
    assert "dead_lettered=60 (deserialization=60)" in done.stderr
    assert processed_ids(settings) == {"survivor"}
    assert len(read_all(settings.dlq_topic)) == 60
