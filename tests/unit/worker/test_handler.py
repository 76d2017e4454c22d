"""The business step: the original price rule, and loading a handler from a spec."""

from __future__ import annotations

import sys
import types

import pytest

from orderproc.errors import HIGH_PRICE_REASON, BusinessRuleError, ConfigError
from orderproc.models import Order
from orderproc.worker.handler import PriceThresholdHandler, load_handler
from orderproc.worker.retry import classify

pytestmark = pytest.mark.unit


def _order(price: float) -> Order:
    return Order("o-1", "item1", price)


# -- PriceThresholdHandler -------------------------------------------------------------


@pytest.mark.parametrize("price", [0.0, 10.0, 99.99, 100.0])
def test_orders_up_to_the_threshold_pass(price: float) -> None:
    PriceThresholdHandler()(_order(price))  # returns normally: processed


@pytest.mark.parametrize("price", [100.01, 150.0])
def test_orders_above_the_threshold_fail_with_the_original_message(price: float) -> None:
    with pytest.raises(BusinessRuleError) as caught:
        PriceThresholdHandler()(_order(price))

    assert str(caught.value) == "Simulated error: high price"
    assert caught.value.retryable is True


def test_threshold_is_configurable() -> None:
    handler = PriceThresholdHandler(threshold=200.0)

    handler(_order(150.0))
    with pytest.raises(BusinessRuleError, match=HIGH_PRICE_REASON):
        handler(_order(200.01))


def test_a_handler_loaded_by_spec_keeps_the_original_rule_and_reason() -> None:
    handler = load_handler("orderproc.worker.handler:PriceThresholdHandler")

    handler(_order(100.0))  # at the threshold: returns normally, the order is processed
    with pytest.raises(BusinessRuleError) as caught:
        handler(_order(100.01))

    assert str(caught.value) == HIGH_PRICE_REASON
    # The consumer keeps the handler's own error: retried, then dead-lettered with this reason.
    assert classify(caught.value) is caught.value
    assert caught.value.retryable is True


# -- load_handler ----------------------------------------------------------------------


@pytest.fixture
def handlers_module(monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of handlers, registered in memory only."""
    module = types.ModuleType("fake_handlers")

    def reject_everything(order: Order) -> None:
        raise BusinessRuleError("closed")

    module.strict = PriceThresholdHandler(threshold=50.0)  # type: ignore[attr-defined]
    module.reject_everything = reject_everything  # type: ignore[attr-defined]
    module.NOT_CALLABLE = "just a string"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_handlers", module)
    return "fake_handlers"


def test_class_spec_is_instantiated_with_its_defaults() -> None:
    handler = load_handler("orderproc.worker.handler:PriceThresholdHandler")

    assert handler == PriceThresholdHandler(threshold=100.0)


def test_instance_spec_is_used_as_is(handlers_module: str) -> None:
    handler = load_handler(f"{handlers_module}:strict")

    assert handler == PriceThresholdHandler(threshold=50.0)
    with pytest.raises(BusinessRuleError):
        handler(_order(60.0))


def test_function_spec_is_used_as_is(handlers_module: str) -> None:
    handler = load_handler(f"{handlers_module}:reject_everything")

    with pytest.raises(BusinessRuleError, match="closed"):
        handler(_order(1.0))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("orderproc.worker.handler", "must look like 'package.module:attribute'"),
        (":PriceThresholdHandler", "must look like"),
        ("orderproc.worker.handler:", "must look like"),
        ("", "must look like"),
        ("no_such_module_for_orderproc:handler", "cannot load handler"),
        ("orderproc.worker.handler:NoSuchHandler", "cannot load handler"),
        ("fake_handlers:NOT_CALLABLE", "is not callable"),
    ],
)
def test_bad_spec_is_a_one_line_config_error(handlers_module: str, spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_handler(spec)

    assert "\n" not in str(caught.value)
    assert repr(spec) in str(caught.value)


@pytest.mark.parametrize(
    "spec",
    ["orderproc.models:Order", ".relative_module:handler"],
    ids=["class-needs-arguments", "relative-module"],
)
def test_unusable_spec_is_a_config_error_not_a_traceback(spec: str) -> None:
    with pytest.raises(ConfigError):
        load_handler(spec)
