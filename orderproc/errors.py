"""The one error hierarchy: every failure orderproc expects derives from ``OrderProcError``.

Two kinds:

* **Processing errors** are a *record's* failure. ``PermanentError`` sends the record
  straight to the dead-letter queue; ``RetryableError`` sends it through the retry
  policy first. Once the consumer has the record in hand it attaches it
  (``error.record``: topic, partition, offset, key, headers and raw value), as
  confluent-kafka's deserialization errors carry their message.
* **Operational errors** (settings, broker, database, review actions, the dev stack)
  stop the command that hit them. Each carries a one-line message that the CLI
  prints instead of a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orderproc.records import Record

HIGH_PRICE_REASON = "Simulated error: high price"
"""The original system's business-rule failure, raised by the default handler."""


class ErrorCategory(StrEnum):
    """Why a record failed; a DLQ envelope field and a metrics label."""

    DESERIALIZATION = "deserialization"
    SCHEMA = "schema"
    VALIDATION = "validation"
    BUSINESS_RULE = "business_rule"
    TRANSIENT = "transient"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


class OrderProcError(Exception):
    """Root of every orderproc error."""


# -- operational errors ----------------------------------------------------------------


class ConfigError(OrderProcError):
    """A setting or an argument is wrong."""


class BrokerError(OrderProcError):
    """Kafka could not be reached, or refused an administrative request."""


class DeliveryError(OrderProcError):
    """The broker did not acknowledge a record we must not lose."""


class StoreError(OrderProcError):
    """The database could not be reached, or failed as a whole (not because of one row)."""


class RowsRefusedError(StoreError):
    """The database is up but refused the data: some row breaks a type, length or constraint."""


class DrainError(OrderProcError):
    """The DLQ could not be drained (broker unreachable, topic missing, commit failed)."""


class ReviewError(OrderProcError):
    """A review action is not allowed (unknown id, wrong status, invalid correction)."""


class UnknownEventError(ReviewError):
    """No DLQ event has the id asked for."""


class ConflictError(ReviewError):
    """The row changed since the reviewer's view of it: nothing was applied over it."""


class ReplayError(OrderProcError):
    """A replay run could not start, or was stopped by a newer run."""


class ReplayBusyError(ReplayError):
    """Another replay run holds the replay and did not finish within the wait."""


class ReplayFencedError(ReplayError):
    """A newer replay run took over: this run changes nothing any more."""


class ReplayPausedError(ReplayError):
    """A replay run paused (its replayed orders failed again, or their outcomes did not
    arrive): its message is the run's verdict."""


class RegistryError(OrderProcError):
    """The schema registry answered a request with a refusal we cannot act on.

    ``status`` and ``error_code`` are the registry's HTTP status and its own error code
    (Confluent API: 40401 subject not found, 40403 schema not found, 409 incompatible),
    when it answered at all.
    """

    def __init__(
        self, message: str, *, status: int | None = None, error_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class RegistryUnavailableError(RegistryError):
    """The schema registry cannot be reached now (refused, timed out, 5xx): an outage.

    Never a record's failure: the consumer pauses and tries again, the replay waits,
    and nothing is dead-lettered because of it.
    """


class RegistryRefusedError(RegistryError):
    """The schema registry refused our credentials or certificate, or the subject: stop."""


# -- a record's failure ----------------------------------------------------------------


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
        record: Record | None = None,
    ) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category
        if retryable is not None:
            self.retryable = retryable
        self.record = record

    def about(self, record: Record) -> ProcessingError:
        """Attach the record that failed (if none is attached yet); return ``self``."""
        if self.record is None:
            self.record = record
        return self


class PermanentError(ProcessingError):
    """Retrying cannot help: dead-letter the record at once."""

    retryable = False


class RetryableError(ProcessingError):
    """The record may succeed later: retry it with backoff."""

    category = ErrorCategory.TRANSIENT


class DeserializationError(PermanentError):
    """The bytes are not a valid Avro ``Order``; carries the raw value.

    On the registry wire format ``schema_id`` is the id the record named (None when it
    had no magic byte), and the category is ``schema`` when the id itself is the problem
    (unknown to the registry, or a writer schema that cannot be read as ours).
    """

    category = ErrorCategory.DESERIALIZATION

    def __init__(
        self,
        message: str,
        raw: bytes | None,
        *,
        record: Record | None = None,
        schema_id: int | None = None,
        category: ErrorCategory | None = None,
    ) -> None:
        super().__init__(message, record=record, category=category)
        self.raw = raw
        self.schema_id = schema_id


class ValidationError(PermanentError):
    """The record decoded but is not a valid order (empty id, NaN price, ...)."""

    category = ErrorCategory.VALIDATION


class InternalError(PermanentError):
    """orderproc itself failed on this record (a bug): dead-letter it, keep the stream going."""

    category = ErrorCategory.INTERNAL


class StoreRefusedError(PermanentError):
    """The database is up but refused this order's row."""

    category = ErrorCategory.VALIDATION


class BusinessRuleError(RetryableError):
    """The handler rejected the order (the original 'Simulated error: high price')."""

    category = ErrorCategory.BUSINESS_RULE
