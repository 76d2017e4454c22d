"""The raw baselines: confluent-kafka batch ``consume()`` + fastavro, optionally + ``COPY``;
and a produce loop of fastavro-encoded orders.

This is what a hand-written loop with no framework would do, kept lean but not
contrived: librdkafka defaults (auto offset store and commit every 5 s), one
``BytesIO`` + ``schemaless_reader`` per record, and for the persisting baseline
one ``COPY`` and one commit per batch through psycopg 3.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import fastavro
import psycopg
from confluent_kafka import AcknowledgeType, Consumer, KafkaError, Message, Producer, ShareConsumer

from bench.stats import Sample
from bench.workload import POLL_TIMEOUT_S, BenchError
from orderproc.models import Order
from orderproc.serde import schema_path

Decoded = list[tuple[Message, Any]]

COPY_SQL = (
    "COPY processed_orders (order_id, product, price, attempts, source_topic,"
    " source_partition, source_offset, processed_at, replay_id) FROM STDIN"
)

SCHEMA = fastavro.parse_schema(json.loads(schema_path("order.avsc").read_text()))


def consume_decode(
    bootstrap: str, topic: str, group: str, target: int, batch_size: int, idle_s: float
) -> Sample:
    """Time to consume and decode ``target`` records (from the first batch on)."""
    return _run(bootstrap, topic, group, target, batch_size, idle_s, write=None)


def consume_decode_copy(
    bootstrap: str,
    topic: str,
    group: str,
    target: int,
    batch_size: int,
    idle_s: float,
    conn: psycopg.Connection[Any],
) -> Sample:
    """As ``consume_decode``, plus a ``COPY`` of each batch's rows and a commit per batch."""

    def copy_batch(batch: Decoded) -> None:
        now = datetime.now(UTC)
        with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
            for msg, rec in batch:
                copy.write_row(
                    (
                        rec["orderId"],
                        rec["product"],
                        round(rec["price"], 2),
                        1,
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        now,
                        None,
                    )
                )
        conn.commit()

    return _run(bootstrap, topic, group, target, batch_size, idle_s, write=copy_batch)


def _run(
    bootstrap: str,
    topic: str,
    group: str,
    target: int,
    batch_size: int,
    idle_s: float,
    write: Callable[[Decoded], None] | None,
) -> Sample:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    reader = fastavro.schemaless_reader
    done = 0
    started: float | None = None
    try:
        consumer.subscribe([topic])
        last = time.monotonic()
        while done < target:
            messages = consumer.consume(batch_size, timeout=POLL_TIMEOUT_S)
            if not messages:
                if time.monotonic() - last > idle_s:
                    raise BenchError(f"raw consumer idle after {done} of {target} records")
                continue
            if started is None:
                started = time.perf_counter()
            last = time.monotonic()
            batch: Decoded = []
            for msg in messages:
                err = msg.error()
                if err is not None:
                    raise BenchError(f"raw consumer error: {err.str()}")
                batch.append((msg, reader(io.BytesIO(msg.value() or b""), SCHEMA, None)))
            if write is not None:
                write(batch)
            done += len(batch)
        finished = time.perf_counter()
    finally:
        consumer.close()
    assert started is not None  # the loop ran at least one batch
    return Sample(done, finished - started)


def share_consume_decode(
    bootstrap: str, topic: str, group: str, target: int, idle_s: float
) -> Sample:
    """A share group member (explicit acknowledgement): poll, decode, ACCEPT each record;
    the acknowledgements go with the next poll. The group's configs are set beforehand."""
    consumer = ShareConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "share.acknowledgement.mode": "explicit",
        }
    )
    reader, accept = fastavro.schemaless_reader, AcknowledgeType.ACCEPT
    done = 0
    started: float | None = None
    try:
        consumer.subscribe([topic])
        last = time.monotonic()
        while done < target:
            messages = consumer.poll(POLL_TIMEOUT_S)
            if not messages:
                if time.monotonic() - last > idle_s:
                    raise BenchError(f"raw share consumer idle after {done} of {target} records")
                continue
            if started is None:
                started = time.perf_counter()
            last = time.monotonic()
            for msg in messages:
                err = msg.error()
                if err is not None:
                    raise BenchError(f"raw share consumer error: {err.str()}")
                reader(io.BytesIO(msg.value() or b""), SCHEMA, None)
                consumer.acknowledge(msg, accept)
            done += len(messages)
        consumer.commit_sync()
        finished = time.perf_counter()
    finally:
        consumer.close()
    assert started is not None  # the loop ran at least one poll
    return Sample(done, finished - started)


def produce_encode(bootstrap: str, topic: str, orders: Sequence[Order]) -> Sample:
    """Time to encode ``orders`` with fastavro, produce them keyed by ``orderId`` with the
    same acknowledgements and idempotence as ``orderproc produce`` (librdkafka's defaults
    otherwise), and see every delivery report come back without an error."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    writer, schema = fastavro.schemaless_writer, SCHEMA
    failed: list[str] = []

    def report(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err.str())

    started = time.perf_counter()
    for order in orders:
        buf = io.BytesIO()
        writer(buf, schema, order.to_record())
        while True:
            try:
                producer.produce(topic, buf.getvalue(), order.order_id.encode(), on_delivery=report)
                break
            except BufferError:  # the local queue is full: serve reports to free room
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    finished = time.perf_counter()
    if remaining or failed:
        raise BenchError(f"raw producer: {remaining} unacknowledged, {len(failed)} failed "
                         f"({failed[:1]})")  # fmt: skip
    return Sample(len(orders), finished - started)
