"""The review backlog as pages: filtered, sorted rows, counts per status, the oldest
unresolved failure, the values the filters offer, and what one row is made of.

Read only. Every value a user chose reaches SQL as a bound parameter or, for the sort,
as one of the columns of ``SORTS`` picked by name: nothing a user types is SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from orderproc.dlq.filters import EventFilter, failed_at
from orderproc.models import UNRESOLVED_STATUSES, DlqStatus
from orderproc.store.tables import DlqCopy, DlqEvent

Column = ColumnElement[Any] | InstrumentedAttribute[Any]

SORTS: dict[str, Column] = {
    "failed_at": failed_at(),
    "id": DlqEvent.id,
    "order_id": DlqEvent.order_id,
    "product": DlqEvent.product,
    "price": DlqEvent.price,
    "status": DlqEvent.status,
    "reason": DlqEvent.reason,
    "category": DlqEvent.category,
    "attempts": DlqEvent.attempts,
    "copies": DlqEvent.copies,
    "replays": DlqEvent.replay_count,
}
"""The columns a backlog can be sorted by, by the name a page asks for."""

PAGE_SIZES = (25, 50, 100, 200)
MAX_CHOICES = 30
"""At most this many distinct reasons/products are offered in a filter (the most frequent)."""


@dataclass(frozen=True, slots=True)
class Sort:
    """A column of ``SORTS`` and a direction; ties are broken by id, empty values last."""

    key: str = "failed_at"
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a filtered backlog."""

    rows: list[DlqEvent]
    total: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


@dataclass(frozen=True, slots=True)
class Oldest:
    """The unresolved (``new``/``approved``) row that has waited longest."""

    event_id: int
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class Choices:
    """The values the backlog's filters offer, most frequent first."""

    reasons: list[str]
    categories: list[str]
    products: list[str]


class Backlog:
    """The review page's reads of the DLQ store."""

    engine: Engine

    def page(
        self, flt: EventFilter, sort: Sort | None = None, *, number: int = 1, size: int = 50
    ) -> Page:
        """Rows ``flt`` selects, ordered by ``sort``; page ``number`` (from 1) of ``size``.

        A page past the end is the last page.
        """
        sort = sort or Sort()
        if sort.key not in SORTS:
            raise ValueError(f"cannot sort by {sort.key!r}")
        column = SORTS[sort.key]
        # Rows without the value (an order that did not decode) last either way, on
        # PostgreSQL (which puts NULL first in descending order) as on SQLite.
        ordered = column.desc() if sort.descending else column.asc()
        order = [ordered.nulls_last(), DlqEvent.id.asc()]
        total = self.count(flt)
        number = min(max(1, number), max(1, -(-total // size)))
        stmt = (
            select(DlqEvent)
            .where(*flt.clauses())
            .order_by(*order)
            .offset((number - 1) * size)
            .limit(size)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            rows = list(session.scalars(stmt))
        return Page(rows, total, number, size)

    def count(self, flt: EventFilter | None = None) -> int:
        """Number of rows ``flt`` selects."""
        stmt = select(func.count()).select_from(DlqEvent).where(*(flt or EventFilter()).clauses())
        with self.engine.connect() as conn:
            return int(conn.scalar(stmt) or 0)

    def status_counts(self, flt: EventFilter) -> dict[str, int]:
        """Rows per status among those ``flt`` selects whatever their status (every
        status present, zero included)."""
        stmt = (
            select(DlqEvent.status, func.count())
            .where(*flt.with_status(None).clauses())
            .group_by(DlqEvent.status)
        )
        counts = dict.fromkeys((s.value for s in DlqStatus), 0)
        with self.engine.connect() as conn:
            counts.update({str(status): int(n) for status, n in conn.execute(stmt)})
        return counts

    def oldest_unresolved(self) -> Oldest | None:
        """The ``new`` or ``approved`` row that failed first, in the whole store."""
        at = failed_at()
        stmt = (
            select(DlqEvent.id, at.label("at"))
            .where(DlqEvent.status.in_(UNRESOLVED_STATUSES))
            .order_by(at.asc(), DlqEvent.id.asc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else Oldest(int(row.id), row.at)  # aware: UtcDateTime

    def choices(self) -> Choices:
        """Reasons, categories and products present in the store, most frequent first."""
        with self.engine.connect() as conn:
            return Choices(
                reasons=_frequent(conn, DlqEvent.reason),
                categories=_frequent(conn, DlqEvent.category),
                products=_frequent(conn, DlqEvent.product),
            )

    def matching_ids(self, flt: EventFilter, *, limit: int) -> list[int]:
        """Ids of up to ``limit`` rows ``flt`` selects, oldest first (a bulk action's rows)."""
        stmt = select(DlqEvent.id).where(*flt.clauses()).order_by(DlqEvent.id).limit(limit)
        with self.engine.connect() as conn:
            return [int(i) for i in conn.scalars(stmt)]

    def copies_of(self, event_id: int) -> list[DlqCopy]:
        """Every DLQ record that carried this failure, first drained first."""
        stmt = (
            select(DlqCopy)
            .where(DlqCopy.event_id == event_id)
            .order_by(DlqCopy.drained_at, DlqCopy.dlq_partition, DlqCopy.dlq_offset)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    def same_order(self, event: DlqEvent, *, limit: int = 20) -> list[DlqEvent]:
        """Other rows of the same order id (its earlier and later trips through the DLQ)."""
        if event.order_id is None:
            return []
        stmt = (
            select(DlqEvent)
            .where(DlqEvent.order_id == event.order_id, DlqEvent.id != event.id)
            .order_by(DlqEvent.id)
            .limit(limit)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))


def _frequent(conn: Connection, column: InstrumentedAttribute[Any]) -> list[str]:
    stmt = (
        select(column, func.count().label("n"))
        .where(column.is_not(None))
        .group_by(column)
        .order_by(func.count().desc(), column)
        .limit(MAX_CHOICES)
    )
    return [str(value) for value, _ in conn.execute(stmt)]
