"""Order handlers: the business step of the consumer, pure and testable without Kafka."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from orderproc.errors import HIGH_PRICE_REASON, BusinessRuleError, ConfigError
from orderproc.models import Order


@runtime_checkable
class OrderHandler(Protocol):
    """Processes one order; returns normally on success.

    Raise ``PermanentError`` for an order that can never succeed, any other
    exception (or ``RetryableError``) for one worth retrying.
    """

    def __call__(self, order: Order) -> None: ...


@dataclass(frozen=True, slots=True)
class PriceThresholdHandler:
    """The original system's rule: an order priced above the threshold fails."""

    threshold: float = 100.0

    def __call__(self, order: Order) -> None:
        if order.price > self.threshold:
            raise BusinessRuleError(HIGH_PRICE_REASON)


def load_handler(spec: str) -> OrderHandler:
    """Import a handler from ``package.module:attribute``.

    The attribute may be a handler instance or a zero-argument factory/class.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"handler must look like 'package.module:attribute', got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
        if isinstance(target, type):
            target = target()
    except Exception as exc:  # user code: import, syntax and constructor errors
        raise ConfigError(f"cannot load handler {spec!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(target):
        raise ConfigError(f"handler {spec!r} is not callable")
    return target  # type: ignore[no-any-return]
