"""Queue mode on the real broker: ``orderproc consume --group-type share`` as processes.

One partition, four consumers: a consumer group would leave three of them idle; a share
group hands the records out to all four. Failing orders are retried by redelivery (the
broker's delivery count is the attempt number) and dead-lettered once each; every good
order is stored once. On both stores.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orderproc.config import GroupType, ProcessingGuarantee, Settings
from orderproc.serde import serde_for
from orderproc.store.engine import make_engine
from orderproc.store.tables import ProcessedOrder
from tests.support import wait_until

CONSUMERS = 4
ORDERS = 1000


def _stored(database_url: str) -> list[str]:
    """The order ids of the store's processed rows."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(ProcessedOrder.order_id)))
    finally:
        engine.dispose()


def _metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (with its labels, as exposed) in a /metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics:\n{text[:3000]}")


def test_four_share_consumers_on_one_partition_all_work_and_retry_by_redelivery(
    db_url: str,
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    run_cli: Callable[..., Any],
    read_all: Callable[..., list[Any]],
    tmp_path: Path,
) -> None:
    settings = make_settings(partitions=1, group_type=GroupType.SHARE, database_url=db_url,
                             max_attempts=3, session_timeout_ms=6000)  # fmt: skip
    workers = [start_worker(settings, "consume", "--quiet") for _ in range(CONSUMERS)]
    produced = run_cli(settings, "produce", "--count", str(ORDERS), "--rate", "200",
                       "--fail-share", "0.1", "--quiet", "--seed", "7")  # fmt: skip
    assert produced.returncode == 0, produced.stderr

    serde = serde_for(settings)
    orders = {o.order_id: o.price for o in
              (serde.decode(m.value()) for m in read_all(settings.orders_topic))}  # fmt: skip
    assert len(orders) == ORDERS
    good = {oid for oid, price in orders.items() if price <= settings.price_threshold}
    failing = set(orders) - good
    assert failing and good

    def dead_letters() -> list[Any]:
        return read_all(settings.dlq_topic)

    wait_until(lambda: len(_stored(db_url)) + len(dead_letters()) >= ORDERS, timeout_s=300,
               what="every order stored or dead-lettered")  # fmt: skip
    # Each member's /metrics: the deliveries it handled, by the broker's delivery count.
    deliveries = [_metric(w.metrics(), "orderproc_share_delivery_count_count") for w in workers]
    retried = sum(_metric(w.metrics(), 'orderproc_orders_retried_total{mode="redelivery"}')
                  for w in workers)  # fmt: skip
    assert retried == len(failing) * (settings.max_attempts - 1)
    assert sum(deliveries) >= ORDERS + retried  # every first delivery and every redelivery
    for worker in workers:
        worker.stop()
        assert worker.proc.returncode == 0

    stored = _stored(db_url)
    assert len(stored) == len(good) and set(stored) == good  # each good order, once
    letters = dead_letters()
    keys = Counter(m.key().decode() for m in letters)
    assert set(keys) == failing and max(keys.values()) == 1  # each failing order once
    for msg in letters:
        envelope = json.loads(msg.value())
        # Retried by redelivery: the broker's delivery count is the attempt number.
        assert envelope["attempts"] == envelope["delivery_count"] == settings.max_attempts
        assert envelope["source"]["topic"] == settings.orders_topic
        assert envelope["consumer_group"] == settings.consumer_group

    # All four worked on the one partition (each prints what it did when it stops).
    consumed = []
    for log in sorted(tmp_path.glob("consume-*.log")):
        summary = re.search(r"consumed=(\d+) processed=(\d+)", log.read_text())
        assert summary, log.read_text()[-2000:]
        consumed.append(int(summary.group(1)))
    assert len(consumed) == CONSUMERS
    assert all(n > 0 for n in consumed), consumed
    assert sum(consumed) == ORDERS  # an accepted record is never handed out again


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"processing_guarantee": ProcessingGuarantee.EXACTLY_ONCE},
            "exactly once needs ORDERPROC_GROUP_TYPE",
        ),
        ({"schema_registry_url": "http://127.0.0.1:1"}, "reads the schemaless wire format only"),
    ],
)
def test_what_a_share_group_cannot_do_is_refused_in_one_line(
    overrides: dict[str, Any],
    message: str,
    make_settings: Callable[..., Settings],
    run_cli: Callable[..., Any],
) -> None:
    settings = make_settings(create=False)
    env_settings = settings.model_copy(update=overrides)
    done = run_cli(env_settings, "consume", "--group-type", "share", "--idle-exit", "1")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_hostile_records_are_dead_lettered_once_and_the_good_ones_behind_them_stored(
    db_url: str,
    make_settings: Callable[..., Settings],
    kcat: Callable[..., None],
    run_cli: Callable[..., Any],
    read_all: Callable[..., list[Any]],
) -> None:
    settings = make_settings(partitions=1, group_type=GroupType.SHARE, database_url=db_url)
    serde = serde_for(settings)

    def order(order_id: str) -> bytes:
        return serde.encode_record({"orderId": order_id, "product": "item1", "price": 20.0})

    hostile = {
        b"not avro at all": (),
        b"\x80": (),  # a length that never ends (kcat writes no record for no bytes)
        order("bad-header"): ((b"\xff\xfe", b"v"),),
        bytes(range(256)) * 3500: (),  # 896,000 bytes of nothing
        order("lies")[:-3]: ((b"orderproc.attempts", b"99"), (b"orderproc.source.topic", b"x")),
    }
    kcat(settings, order("before"), key=b"before")
    for value, headers in hostile.items():
        kcat(settings, value, headers=headers)
    kcat(settings, order("after"), key=b"after")

    done = run_cli(settings, "consume", "--quiet", "--idle-exit", "5", timeout=180)
    assert done.returncode == 0, done.stderr
    assert set(_stored(db_url)) == {"before", "after"}, done.stderr
    envelopes = [json.loads(m.value()) for m in read_all(settings.dlq_topic)]
    assert len(read_all(settings.orders_topic)) == len(hostile) + 2  # kcat wrote them all
    assert len(envelopes) == len(hostile), [e["reason"] for e in envelopes]  # each once
    for envelope in envelopes:
        assert envelope["error"]["category"] == "deserialization", envelope["reason"]
        assert envelope["delivery_count"] == envelope["attempts"] == 1  # never retried
        assert envelope["source"]["topic"] == settings.orders_topic  # the lying headers lost
