"""The price rule at 50 ms an order (``orderproc consume --handler``): four members then
handle 80 orders/s, below the producer's 100, so each one always holds polled orders it
has not stored yet, and a ``kill -9`` always lands on records in hand."""

from __future__ import annotations

import time

from orderproc.models import Order
from orderproc.worker.handler import PriceThresholdHandler

RULE = PriceThresholdHandler(100.0)


def slow_price_rule(order: Order) -> None:
    time.sleep(0.05)
    RULE(order)
