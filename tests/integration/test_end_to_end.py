"""The whole job: live stream -> DLQ -> drain -> review with a correction -> replay -> report."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.replay import ReplayRequest, replay_with_settings
from orderproc.dlq.store import DlqStore, EventFilter
from orderproc.models import Order
from orderproc.report.aggregate import build_report
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine
from orderproc.store.processed import OrderRepository
from orderproc.worker.consumer import OrderConsumer

pytestmark = pytest.mark.integration


def test_dead_lettered_orders_are_corrected_replayed_processed_and_reported(
    make_settings: Callable[..., Settings], make_producer: Callable[..., Producer], pg_url: str
) -> None:
    settings = make_settings(
        partitions=2, database_url=pg_url, max_attempts=2, backoff_initial_s=0.1
    )
    engine = make_engine(pg_url)
    cheap = [Order(f"ok-{i}", f"item{i % 5 + 1}", 20.0 + i) for i in range(15)]
    expensive = [Order(f"big-{i}", "item2", 120.0 + i) for i in range(5)]
    producer, serde = make_producer(), SchemalessSerde()
    for order in cheap + expensive:
        producer.produce(
            settings.orders_topic, key=order.order_id.encode(), value=serde.encode(order)
        )
    assert producer.flush(30) == 0

    # 1. The live consumer processes the cheap orders and dead-letters the expensive ones.
    first = OrderConsumer(settings, OrderRepository(engine), echo=None).run(idle_exit_s=3)
    assert (first.processed, first.dead_lettered) == (15, 5)

    # 2. The drain stores each DLQ record once.
    drained = run_drain(settings, database_url=pg_url)
    assert drained.inserted == 5
    store = DlqStore(engine)
    events = store.list_events(EventFilter(status="new"))
    assert sorted(e.order_id for e in events) == sorted(o.order_id for o in expensive)

    # 3. A reviewer corrects the price and approves.
    for event in events:
        store.edit(event.id, {"price": 42.5}, actor="reviewer", note="price typo")
    store.approve([e.id for e in events], actor="reviewer", note="fixed")

    # 4. Replay republishes exactly the approved rows to the orders topic.
    result = replay_with_settings(settings, ReplayRequest(), database_url=pg_url, replay_id="r-1")
    assert len(result.delivered) == 5 and not result.failed

    # 5. The consumer processes the corrected orders.
    second = OrderConsumer(settings, OrderRepository(engine), echo=None).run(idle_exit_s=3)
    assert (second.processed, second.dead_lettered) == (5, 0)
    repo = OrderRepository(engine)
    assert repo.processed_ids() == {o.order_id for o in cheap + expensive}
    assert repo.price_totals()["item2"][1] == pytest.approx(
        sum(o.price for o in cheap if o.product == "item2") + 5 * 42.5
    )

    # 6. The report shows the replay success.
    report = build_report(engine)
    assert (report.replay.replayed, report.replay.succeeded) == (5, 5)
    assert report.replay.success_rate == 1.0
    assert report.backlog.get("replayed") == 5
    assert report.inflow_by_reason == {"Simulated error: high price": 5}
