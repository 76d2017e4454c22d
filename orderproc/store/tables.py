"""Tables (SQLAlchemy 2 declarative). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orderproc.models import MAX_REPLAY_ID, MAX_TEXT, DlqStatus


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
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_processed_orders_product", "product"),)


class DlqEvent(Base):
    """One record of ``orders_dlq``, unique on its DLQ coordinates, plus its review state."""

    __tablename__ = "dlq_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
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
    source_timestamp: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    first_failure_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    drained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default=DlqStatus.NEW.value, index=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    corrected_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    replay_id: Mapped[str | None] = mapped_column(String(MAX_REPLAY_ID), nullable=True)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    replay_partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    replay_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        UniqueConstraint("dlq_topic", "dlq_partition", "dlq_offset", name="uq_dlq_coordinates"),
    )


class AuditLog(Base):
    """Append-only trail of every action on a DLQ event: who, when, why."""

    __tablename__ = "dlq_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dlq_event_id: Mapped[int] = mapped_column(ForeignKey("dlq_events.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
