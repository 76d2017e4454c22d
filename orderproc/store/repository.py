"""Writes and reads of processed orders; every write is idempotent on ``orderId``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from orderproc.errors import OrderProcError
from orderproc.store.tables import ProcessedOrder


class StoreError(OrderProcError):
    """The database refused or could not be reached."""


@dataclass(frozen=True, slots=True)
class ProcessedRow:
    order_id: str
    product: str
    price: float
    attempts: int
    source_topic: str
    source_partition: int
    source_offset: int
    processed_at: datetime
    replay_id: str | None = None

    def as_params(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "product": self.product,
            "price": self.price,
            "attempts": self.attempts,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "processed_at": self.processed_at,
            "replay_id": self.replay_id,
        }


def upsert_ignore(engine: Engine, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the engine's dialect."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise StoreError(f"unsupported database dialect {engine.dialect.name!r}")


class OrderRepository:
    """Processed orders in PostgreSQL or SQLite."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = upsert_ignore(engine, ProcessedOrder.__table__).returning(
            ProcessedOrder.__table__.c.order_id
        )

    def record_processed(self, rows: Sequence[ProcessedRow]) -> set[str]:
        """Insert the rows in one transaction; return the ids that were new.

        A row whose ``orderId`` is already stored (a redelivery after a crash) is
        ignored, so callers can count only what this call really added.
        """
        if not rows:
            return set()
        try:
            with self.engine.begin() as conn:
                result = conn.execute(self._insert, [row.as_params() for row in rows])
                return {r[0] for r in result}
        except SQLAlchemyError as exc:
            raise StoreError(f"could not record {len(rows)} processed orders: {exc}") from exc

    def price_totals(self) -> dict[str, tuple[int, float]]:
        """Count and sum of processed prices per product (to resume running averages)."""
        stmt = select(
            ProcessedOrder.product, func.count(), func.coalesce(func.sum(ProcessedOrder.price), 0)
        ).group_by(ProcessedOrder.product)
        with self.engine.connect() as conn:
            return {product: (int(n), float(total)) for product, n, total in conn.execute(stmt)}

    def processed_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(ProcessedOrder.order_id)))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(ProcessedOrder)) or 0)
