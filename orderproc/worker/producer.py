"""The order producer: random orders like the original system's, delivered reliably."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from orderproc.clock import Pacer
from orderproc.config import Settings
from orderproc.kafka.access import check_settings, producer_access
from orderproc.kafka.clients import flush, produce, reliable_producer_config
from orderproc.metrics import Health, ProducerMetrics
from orderproc.metrics.roles import ProduceStats
from orderproc.models import Order
from orderproc.serde import serde_for, value_context

log = logging.getLogger(__name__)

PRODUCTS = tuple(f"item{i}" for i in range(1, 6))
PRICE_MIN, PRICE_MAX = 10.0, 150.0


@dataclass(frozen=True)
class OrderGenerator:
    """Random orders: uuid4 ids, ``item1``..``item5``, prices in 10-150.

    ``rng`` (seedable) draws products and prices; ids are always fresh uuid4s.

    With ``fail_share=None`` prices are uniform in 10-150 like the original
    (about 36 % above the default threshold of 100); otherwise exactly that
    share (in expectation) is drawn above ``threshold``.
    """

    threshold: float = 100.0
    fail_share: float | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.fail_share is not None and not 0 <= self.fail_share <= 1:
            raise ValueError("fail share must be between 0 and 1")

    def price(self) -> float:
        if self.fail_share is None:
            return round(self.rng.uniform(PRICE_MIN, PRICE_MAX), 2)
        if self.rng.random() < self.fail_share:
            return round(
                self.rng.uniform(self.threshold + 0.01, max(PRICE_MAX, self.threshold + 1)), 2
            )
        return round(self.rng.uniform(min(PRICE_MIN, self.threshold), self.threshold), 2)

    def __iter__(self) -> Iterator[Order]:
        while True:
            # The id never comes from the seeded generator: two seeded runs must not
            # produce the same order ids (the store would take the second for redeliveries).
            yield Order(str(uuid.uuid4()), self.rng.choice(PRODUCTS), self.price())


class OrderProducer:
    """Produces orders keyed by ``orderId`` with an idempotent, ``acks=all`` producer.

    Every delivery report is checked: a failed delivery is logged and counted,
    never dropped silently; ``run`` returns the counts after a final flush.

    Orders are written in the settings' wire format; with the registry, under the
    schema id this build's schema is registered with, looked up once here (never
    registered, unless ``schema_auto_register``): the producer then never needs the
    registry again, and rides out its outages.

    Raises:
        BrokerError: (building its own producer) Kafka refuses the credentials, the
            certificate or a write to the orders topic, or does not answer.
        RegistryError: the registry cannot be reached or does not hold this build's
            schema under the subject.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        producer: Producer | None = None,
        echo: Callable[[str], None] | None = print,
        metrics: ProducerMetrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ProducerMetrics()
        self.health = health or Health()
        self.topic = settings.orders_topic
        self.serde = serde_for(settings)
        self._context = value_context(self.topic)
        if producer is None:
            check_settings(settings, producer_access(settings))  # before librdkafka retries
        self.schema = self.serde.writer_schema(self._context)
        if producer is None:
            producer = Producer(reliable_producer_config(settings))
        self.producer = producer
        self.stats = self.metrics.stats  # scraped as they are counted
        self._echo = echo
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop.set()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None:
                self.stats.failed += 1
                log.error(
                    "delivery failed topic=%s key=%s error=%s", msg.topic(), msg.key(), err.str()
                )
                return
            self.stats.delivered += 1
        if self._echo:
            self._echo(f"Delivered to {msg.topic()} [{msg.partition()}]")

    def send(self, order: Order) -> None:
        produce(
            self.producer,
            self.topic,
            key=order.order_id.encode(),
            value=self.serde.serialize(order, self._context),
            on_delivery=self._on_delivery,
        )
        self.stats.produced += 1
        if self._echo:
            self._echo(f"Produced: {order.to_record()}")
        self.producer.poll(0)

    def run(
        self,
        orders: Iterator[Order] | OrderGenerator,
        *,
        count: int | None = None,
        rate: float = 1.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> ProduceStats:
        """Produce ``count`` orders (forever if None) at ``rate`` per second (0 = unthrottled)."""
        pacer = Pacer(rate, sleep=self._stop.wait)  # a stop request ends the wait at once
        source = iter(orders)
        # Healthy while it turns: at a slow rate the wait between orders is a turn too.
        self.health.stale_after_s = max(self.health.stale_after_s, 3 / rate if rate else 0)
        try:
            while not self._stop.is_set() and (count is None or self.stats.produced < count):
                self.health.beat()
                if not pacer.wait():
                    break
                self.send(next(source))
                if on_progress:
                    on_progress(1)
        finally:
            remaining = flush(self.producer, self.settings.delivery_timeout_ms / 1000 + 5)
            if remaining:
                self.stats.failed += remaining
                self.health.fail(f"{remaining} orders not acknowledged")
                log.error("%d orders not acknowledged at shutdown", remaining)
        return self.stats
