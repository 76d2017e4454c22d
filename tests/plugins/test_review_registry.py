"""The review page on the registry wire format: a field the subject's latest schema added is
editable, the preview names the schema id the replay writes with, and the corrected
order, replayed as the page's replay button asks, is written with that id and processed."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Message
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy import select

from orderproc.airflow.params import ReplayParams
from orderproc.airflow.review import replay_conf
from orderproc.airflow.tasks import replay_request
from orderproc.config import Settings, get_settings
from orderproc.dlq.replay import replay_with_settings
from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.serde import OrderSchema, local_schema
from orderproc.serde.registry import RegistryClient
from orderproc.serde.subjects import register
from orderproc.store.engine import open_engine
from orderproc.store.processed import OrderRepository
from orderproc.store.tables import ProcessedOrder
from orderproc.worker.consumer import OrderConsumer
from tests.integration.registry.conftest import V2

if TYPE_CHECKING:
    from tests.plugins.conftest import Review

pytestmark = pytest.mark.integration


@pytest.fixture
def page_settings(
    registry_settings: Callable[..., Settings], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings on the registry wire format and the page's store, the review page's too
    (its environment)."""
    settings = registry_settings(database_url=db_url)
    monkeypatch.setenv("ORDERPROC_SCHEMA_REGISTRY_URL", str(settings.schema_registry_url))
    monkeypatch.setenv("ORDERPROC_ORDERS_TOPIC", settings.orders_topic)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_a_correction_from_the_page_is_replayed_with_the_latest_schema_and_processed(
    review: Review,
    store: DlqStore,
    seed_dlq: Callable[..., list[int]],
    page_settings: Settings,
    read_all: Callable[..., list[Message]],
) -> None:
    settings = page_settings
    client = RegistryClient(str(settings.schema_registry_url))
    subject = f"{settings.orders_topic}-value"
    register(client, subject, local_schema())
    v2 = register(client, subject, OrderSchema.of(V2))
    [event] = seed_dlq(store, [Order("o-r", "Laptop", 150.0)])
    label = f"id {v2.schema_id} ({subject} v{v2.version})"

    detail = html.unescape(review.get(f"/orderproc/events/{event}").text)
    saved = review.act(f"/orderproc/events/{event}/edit", {"price": "42.5", "currency": "USD"})
    approved = review.act(f"/orderproc/events/{event}/approve")
    preview = html.unescape(review.get("/orderproc/replay/preview").text)

    assert 'id="edit-currency"' in detail and label in detail  # v2's field, editable
    assert saved.status_code == approved.status_code == 303
    corrected = {"orderId": "o-r", "product": "Laptop", "price": 42.5, "currency": "USD"}
    assert store.get(event).corrected_payload == corrected
    assert label in preview and 'class="act-publish"' in preview

    # What the page's "Replay these rows now" triggers, run as the DAG's task runs it.
    request = replay_request(ReplayParams.parse(replay_conf([event])))
    result = replay_with_settings(settings, request, database_url=settings.database_url)

    assert result.schema == label
    [record] = read_all(settings.orders_topic)
    assert record.value()[:5] == b"\x00" + v2.schema_id.to_bytes(4, "big")
    stranger = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    ctx = SerializationContext(settings.orders_topic, MessageField.VALUE)
    assert stranger(record.value(), ctx) == corrected
    with open_engine(str(settings.database_url)) as engine:
        OrderConsumer(settings, OrderRepository(engine), echo=None).run(idle_exit_s=4)
        with engine.connect() as conn:
            row = conn.execute(select(ProcessedOrder).where(ProcessedOrder.order_id == "o-r")).one()
    assert (row.price, row.replay_id) == (42.5, result.replay_id)
    assert store.get(event).status == "replayed"
