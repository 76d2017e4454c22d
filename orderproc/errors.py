"""Error hierarchy.

``PermanentError`` sends a record straight to the dead-letter queue;
``RetryableError`` sends it through the retry policy first. Every expected
failure a user can hit derives from ``OrderProcError`` and carries a one-line
message that the CLI prints instead of a traceback.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCategory(StrEnum):
    """Why a record failed; a DLQ envelope field and a metrics label."""

    DESERIALIZATION = "deserialization"
    SCHEMA = "schema"
    VALIDATION = "validation"
    BUSINESS_RULE = "business_rule"
    TRANSIENT = "transient"
    UNKNOWN = "unknown"


class OrderProcError(Exception):
    """Root of every orderproc error."""


class ConfigError(OrderProcError):
    """A setting or an argument is wrong."""


class DevstackError(OrderProcError):
    """The local broker or database could not be started, stopped or found."""


class DeliveryError(OrderProcError):
    """The broker did not acknowledge a record we must not lose."""


class ProcessingError(OrderProcError):
    """A record could not be processed."""

    category: ErrorCategory = ErrorCategory.UNKNOWN
    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        category: ErrorCategory | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category
        if retryable is not None:
            self.retryable = retryable


class PermanentError(ProcessingError):
    """Retrying cannot help: dead-letter the record at once."""

    retryable = False


class RetryableError(ProcessingError):
    """The record may succeed later: retry it with backoff."""

    category = ErrorCategory.TRANSIENT


class DeserializationError(PermanentError):
    """The bytes are not a valid Avro ``Order``; carries the raw value."""

    category = ErrorCategory.DESERIALIZATION

    def __init__(self, message: str, raw: bytes | None) -> None:
        super().__init__(message)
        self.raw = raw


class ValidationError(PermanentError):
    """The record decoded but is not a valid order (empty id, NaN price, ...)."""

    category = ErrorCategory.VALIDATION


class BusinessRuleError(RetryableError):
    """The handler rejected the order (the original 'Simulated error: high price')."""

    category = ErrorCategory.BUSINESS_RULE
