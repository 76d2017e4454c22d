"""Tables (SQLAlchemy 2 declarative). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

from orderproc.clock import as_utc
from orderproc.models import MAX_REPLAY_ID, MAX_TEXT, DlqStatus

FAILURE_KEY_LENGTH = 600


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, always aware and in UTC when read back, whichever the store.

    PostgreSQL returns ``timestamptz`` values aware; SQLite keeps no zone and returns
    them naive. Every time column is this type, so no caller ever computes with a naive
    value (the review page once answered 500 on SQLite: "can't subtract offset-naive
    and offset-aware datetimes").
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    pass


class ProcessedOrder(Base):
    """An order the consumer processed successfully; one row per ``orderId``."""

    __tablename__ = "processed_orders"

    order_id: Mapped[str] = mapped_column(String(MAX_TEXT), primary_key=True)
    product: Mapped[str] = mapped_column(String(MAX_TEXT))
    price: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    source_topic: Mapped[str] = mapped_column(String(249))
    source_partition: Mapped[int] = mapped_column(Integer)
    source_offset: Mapped[int] = mapped_column(BigInteger)
    replay_id: Mapped[str | None] = mapped_column(String(MAX_REPLAY_ID), nullable=True)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_processed_orders_product", "product"),)


def _own_failure_key(context: Any) -> str:
    """A row inserted without a failure key is only itself: its DLQ coordinates."""
    row = context.get_current_parameters()
    return f"dlq:{row['dlq_topic']}:{row['dlq_partition']}:{row['dlq_offset']}"


class DlqEvent(Base):
    """One failure, and its review state: one row however many DLQ records carry it.

    ``failure_key`` names the failure (consumer group, source coordinates, replay
    lineage; DLQ coordinates for a foreign record); each DLQ record of it is a row of
    ``dlq_copies`` and ``copies`` counts them. ``dlq_topic/partition/offset`` are the
    first copy's coordinates.
    """

    __tablename__ = "dlq_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    failure_key: Mapped[str] = mapped_column(
        String(FAILURE_KEY_LENGTH), unique=True, default=_own_failure_key
    )
    copies: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    dlq_topic: Mapped[str] = mapped_column(String(249))
    dlq_partition: Mapped[int] = mapped_column(Integer)
    dlq_offset: Mapped[int] = mapped_column(BigInteger)
    message_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(MAX_TEXT), nullable=True, index=True)
    product: Mapped[str | None] = mapped_column(String(MAX_TEXT), nullable=True)
    price: Mapped[float | None] = mapped_column(Float, nullable=True)
    raw_value: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    envelope: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(String(200), nullable=True)
    category: Mapped[str] = mapped_column(String(40), index=True)
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    consumer_group: Mapped[str | None] = mapped_column(String(249), nullable=True)
    source_topic: Mapped[str | None] = mapped_column(String(249), nullable=True)
    source_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source_timestamp: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    first_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    drained_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(20), default=DlqStatus.NEW.value, index=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    corrected_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    replay_id: Mapped[str | None] = mapped_column(String(MAX_REPLAY_ID), nullable=True)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    replay_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    replay_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    replay_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A replay wrote this row's copy inside a Kafka transaction whose outcome the store has
    not recorded yet (``replay_partition/offset`` say where); see ``orderproc.dlq.replay``."""
    schema_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    """The registry schema id the failed record named (registry wire format), if any."""
    schema_version: Mapped[str | None] = mapped_column(String(300), nullable=True)
    """Where the registry kept that id when it failed: ``orders-value v3``."""
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Counts the changes a reviewer acts on (status, correction): an action taken from a
    view of an older version is refused (``orderproc.dlq.store``)."""


class DlqCopy(Base):
    """One record of the DLQ topic, unique on its coordinates, and the failure it carries."""

    __tablename__ = "dlq_copies"

    dlq_topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    dlq_partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    dlq_offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("dlq_events.id"), index=True)
    drained_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditLog(Base):
    """Append-only trail of every action on a DLQ event: who, when, why."""

    __tablename__ = "dlq_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dlq_event_id: Mapped[int] = mapped_column(ForeignKey("dlq_events.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ReplayLease(Base):
    """Which replay run may write the replay's rows now, and its fencing epoch.

    One row (``name = 'replay'``). A run that starts takes it (the epoch goes up by one)
    while it holds the store's replay lock (``orderproc.dlq.lease``); each of its writes
    first checks that the epoch is still its own, so a run that was fenced can change
    nothing any more.
    """

    __tablename__ = "replay_lease"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    replay_id: Mapped[str | None] = mapped_column(String(MAX_REPLAY_ID), nullable=True)
    since: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ReplayRun(Base):
    """One replay run that publishes (``orderproc.dlq.runs``): what it was asked, where it
    stands, what it decided.

    Its tasks (the canary, the steps, the waits between them) each hold the replay lease
    only while they write; this row carries the run from one to the next.
    """

    __tablename__ = "replay_runs"

    replay_id: Mapped[str] = mapped_column(String(MAX_REPLAY_ID), primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The selection and options as asked (what "resume" asks again)."""
    canary: Mapped[int] = mapped_column(Integer, default=0)
    """Rows the canary took."""
    steps: Mapped[int] = mapped_column(Integer, default=0)
    """Steps published after the canary."""
    not_taken: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Rows the selection named by id that the run did not take, and why."""
    dlq_positions: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Partition -> the next DLQ offset to look at for this run's copies failing again."""
    waiting_since: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    """When the current wait for outcomes began (its timeout counts from then)."""
    reserved_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    """Until then no other run takes the rows this one still has to publish."""
    said: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The run's verdict in words (``paused after the canary: 9 of 10 ...``)."""
    failed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The verdict is bad: paused, or replayed orders failed again past the threshold."""
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ReplayRunRow(Base):
    """A row of a replay run's selection and what became of it (``RowOutcome``)."""

    __tablename__ = "replay_run_rows"

    replay_id: Mapped[str] = mapped_column(ForeignKey("replay_runs.replay_id"), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("dlq_events.id"), primary_key=True, index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why it was not published, or the reason it failed again."""
    trip_topic: Mapped[str | None] = mapped_column(String(249), nullable=True)
    trip_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trip_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Where the dead letter of its copy failing again is (its next trip)."""
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    __table_args__ = (Index("ix_replay_run_rows_outcome", "replay_id", "outcome"),)
