"""classify() and the error hierarchy: which failures are retried and how they are labelled."""

from __future__ import annotations

import pytest

from devstack.settings import DevstackError
from orderproc.errors import (
    BrokerError,
    BusinessRuleError,
    ConfigError,
    DeliveryError,
    DeserializationError,
    DrainError,
    ErrorCategory,
    OrderProcError,
    PermanentError,
    ProcessingError,
    RetryableError,
    ReviewError,
    StoreError,
    ValidationError,
)
from orderproc.worker.retry import classify

pytestmark = pytest.mark.unit


# -- the hierarchy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "category", "retryable"),
    [
        (ProcessingError("x"), ErrorCategory.UNKNOWN, True),
        (PermanentError("x"), ErrorCategory.UNKNOWN, False),
        (RetryableError("x"), ErrorCategory.TRANSIENT, True),
        (DeserializationError("x", b"\x00"), ErrorCategory.DESERIALIZATION, False),
        (ValidationError("x"), ErrorCategory.VALIDATION, False),
        (BusinessRuleError("x"), ErrorCategory.BUSINESS_RULE, True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_error_class_has_its_category_and_retry_flag(
    error: ProcessingError, category: ErrorCategory, retryable: bool
) -> None:
    assert error.category is category
    assert error.retryable is retryable


@pytest.mark.parametrize(
    "cls",
    [
        ConfigError,
        DevstackError,
        BrokerError,
        DeliveryError,
        StoreError,
        DrainError,
        ReviewError,
        ProcessingError,
        PermanentError,
        RetryableError,
        ValidationError,
        BusinessRuleError,
    ],
)
def test_every_expected_failure_derives_from_the_root_the_cli_catches(cls: type) -> None:
    assert issubclass(cls, OrderProcError)


def test_deserialization_and_validation_errors_go_straight_to_the_dlq() -> None:
    assert issubclass(DeserializationError, PermanentError)
    assert issubclass(ValidationError, PermanentError)


def test_deserialization_error_carries_the_raw_bytes_for_the_dlq() -> None:
    error = DeserializationError("undecodable Avro", b"\xde\xad")

    assert error.raw == b"\xde\xad"
    assert str(error) == "undecodable Avro"


def test_per_instance_overrides_do_not_leak_into_the_class() -> None:
    overridden = RetryableError("x", category=ErrorCategory.SCHEMA, retryable=False)

    assert (overridden.category, overridden.retryable) == (ErrorCategory.SCHEMA, False)
    fresh = RetryableError("y")
    assert (fresh.category, fresh.retryable) == (ErrorCategory.TRANSIENT, True)


def test_category_values_are_the_stable_labels_used_in_envelopes_and_metrics() -> None:
    assert {c.value for c in ErrorCategory} == {
        "deserialization",
        "schema",
        "validation",
        "business_rule",
        "transient",
        "internal",
        "unknown",
    }


# -- classify --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ProcessingError("x"),
        PermanentError("x"),
        RetryableError("x"),
        ValidationError("x"),
        DeserializationError("x", None),
        BusinessRuleError("Simulated error: high price"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_our_errors_are_kept_as_they_are(error: ProcessingError) -> None:
    assert classify(error) is error


def test_foreign_exception_is_wrapped_as_a_retryable_transient_error() -> None:
    original = ConnectionResetError("peer reset")

    wrapped = classify(original)

    assert type(wrapped) is ProcessingError
    assert wrapped.category is ErrorCategory.TRANSIENT
    assert wrapped.retryable is True
    assert wrapped.__cause__ is original


def test_wrapped_message_names_the_foreign_class_and_its_message() -> None:
    assert str(classify(KeyError("sku"))) == "KeyError: 'sku'"
    assert str(classify(RuntimeError())) == "RuntimeError: "


def test_non_processing_orderproc_error_from_a_handler_is_wrapped_too() -> None:
    original = ConfigError("missing setting")

    wrapped = classify(original)

    assert type(wrapped) is ProcessingError
    assert wrapped.retryable is True
    assert wrapped.__cause__ is original
