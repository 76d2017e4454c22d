"""The DLQ audit report's numbers: read-only aggregation over the store.

Definitions (``since`` is an optional lower bound, default all time):

* **DLQ inflow** counts ``dlq_events`` rows whose failure time (``dead_lettered_at``,
  or ``drained_at`` when the envelope had none) is at or after ``since``, grouped by
  reason, by category and by product (``(unknown)`` when the record had no product).
* **By schema** counts the same rows by the registry schema id their record named
  (``id 7 (orders-value v3)``; ``(none)`` without one): a producer that deployed a
  schema the consumer cannot read shows as one line.
* **Price statistics** compare ``dlq_events`` rows with a price (same window) with
  ``processed_orders`` rows whose ``processed_at`` is in the window.
* **Running average** is the consumer's ``avg=``: the mean of processed prices so far,
  overall and per product; the chart also draws how it evolved over ``processed_at``.
* **Review backlog** is the current state, never windowed: rows per status, and the
  failure time of the oldest unresolved row (status ``new`` or ``approved``).
* **Replay success rate** = succeeded / replayed, per replay. *Replayed* rows are
  ``dlq_events`` with ``replayed_at`` set (replayed in the window), whatever their
  status now; each row is replayed at most once (a copy that fails again comes back as
  a new row). A replayed row *succeeded* when its copy was processed
  (``orderproc.store.processed.replayed_copy_processed``, the join the replay's own
  outcomes use: ``processed_orders`` holds the order it published with the same
  ``replay_id``). No replayed rows: the rate is ``None`` (``n/a``). Each row is published
  once (``orderproc.dlq.publish``), so the id it keeps is the id of the copy that was read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from orderproc.clock import as_utc
from orderproc.models import UNRESOLVED_STATUSES, DlqStatus
from orderproc.store.processed import replayed_copy_processed
from orderproc.store.tables import DlqEvent, ProcessedOrder

UNKNOWN_PRODUCT = "(unknown)"
NO_SCHEMA = "(none)"
UNRESOLVED = UNRESOLVED_STATUSES

CURVE_POINTS = 500
"""The running-average curve keeps at most this many points, whatever the table size."""


@dataclass(frozen=True, slots=True)
class PriceStats:
    """Count, min, max, mean and median of a set of prices (None when empty)."""

    count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    median: float | None = None


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """Replayed DLQ rows, and how many of the copies they published were processed."""

    replayed: int
    succeeded: int

    @property
    def success_rate(self) -> float | None:
        """``succeeded / replayed``, or None when nothing was replayed."""
        return self.succeeded / self.replayed if self.replayed else None


@dataclass(frozen=True, slots=True)
class DlqReport:
    """Everything the report shows, computed by ``build_report``."""

    generated_at: datetime
    since: datetime | None
    inflow_by_reason: Mapping[str, int]
    inflow_by_category: Mapping[str, int]
    inflow_by_product: Mapping[str, int]
    failed_prices: PriceStats
    processed_prices: PriceStats
    running_average_by_product: Mapping[str, float]
    running_average_curve: Sequence[tuple[datetime, float]]
    backlog: Mapping[str, int]
    oldest_unresolved_at: datetime | None
    replay: ReplayStats
    inflow_by_schema: Mapping[str, int] = field(default_factory=dict)

    @property
    def dlq_total(self) -> int:
        """DLQ rows in the window."""
        return sum(self.inflow_by_category.values())

    @property
    def running_average(self) -> float | None:
        """The overall running average of processed prices (their mean)."""
        return self.processed_prices.mean

    @property
    def oldest_unresolved_age(self) -> timedelta | None:
        """How long the oldest unresolved row has waited, as of ``generated_at``."""
        if self.oldest_unresolved_at is None:
            return None
        return max(self.generated_at - self.oldest_unresolved_at, timedelta(0))


# -- Aggregation ---------------------------------------------------------------------


def build_report(
    engine: Engine, *, now: datetime | None = None, since: datetime | None = None
) -> DlqReport:
    """Aggregate the store into a ``DlqReport`` (read-only; one connection).

    Args:
        engine: Engine of the orderproc store (PostgreSQL or SQLite).
        now: The report's time (ages are measured to it); default: the current time.
        since: Only count DLQ rows, processed orders and replays from then on.
    """
    since = as_utc(since) if since is not None else None
    failed_at = func.coalesce(DlqEvent.dead_lettered_at, DlqEvent.drained_at)
    dlq_window = [] if since is None else [failed_at >= since]
    done_window = [] if since is None else [ProcessedOrder.processed_at >= since]
    product = func.coalesce(DlqEvent.product, UNKNOWN_PRODUCT)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every query, so the numbers agree while the drain writes.
            conn.execution_options(isolation_level="REPEATABLE READ")
        return DlqReport(
            generated_at=as_utc(now or datetime.now(UTC)),
            since=since,
            inflow_by_reason=_counts(conn, DlqEvent.reason, dlq_window),
            inflow_by_category=_counts(conn, DlqEvent.category, dlq_window),
            inflow_by_product=_counts(conn, product, dlq_window),
            failed_prices=_price_stats(conn, DlqEvent.price, dlq_window),
            processed_prices=_price_stats(conn, ProcessedOrder.price, done_window),
            running_average_by_product=_average_by_product(conn, done_window),
            running_average_curve=_average_curve(conn, done_window),
            backlog=_backlog(conn),
            oldest_unresolved_at=_oldest_unresolved(conn, failed_at),
            replay=_replay_stats(conn, since),
            inflow_by_schema=_schema_counts(conn, dlq_window),
        )


def _counts(conn: Connection, key: Any, where: list[ColumnElement[bool]]) -> dict[str, int]:
    n = func.count().label("n")
    stmt = select(key, n).where(*where).group_by(key).order_by(n.desc(), key)
    return {str(k): int(v) for k, v in conn.execute(stmt)}


def _schema_counts(conn: Connection, where: list[ColumnElement[bool]]) -> dict[str, int]:
    n = func.count().label("n")
    key = (DlqEvent.schema_id, DlqEvent.schema_version)
    stmt = select(*key, n).where(*where).group_by(*key).order_by(n.desc(), *key)
    counts: dict[str, int] = {}
    for schema_id, version, count in conn.execute(stmt):
        label = NO_SCHEMA if schema_id is None else f"id {schema_id}"
        label += f" ({version})" if schema_id is not None and version else ""
        counts[label] = counts.get(label, 0) + int(count)
    return counts


def _price_stats(conn: Connection, price: Any, where: list[ColumnElement[bool]]) -> PriceStats:
    where = [*where, price.is_not(None)]
    row = conn.execute(
        select(func.count(), func.min(price), func.max(price), func.avg(price)).where(*where)
    ).one()
    count = int(row[0])
    if count == 0:
        return PriceStats(count=0)
    # Median without percentile functions (SQLite has none): the middle one or two rows.
    middle = select(price).where(*where).order_by(price).offset((count - 1) // 2)
    values = list(conn.scalars(middle.limit(2 - count % 2)))
    median = sum(values) / len(values)
    return PriceStats(count, float(row[1]), float(row[2]), float(row[3]), float(median))


def _average_by_product(conn: Connection, where: list[ColumnElement[bool]]) -> dict[str, float]:
    stmt = (
        select(ProcessedOrder.product, func.avg(ProcessedOrder.price))
        .where(*where)
        .group_by(ProcessedOrder.product)
        .order_by(ProcessedOrder.product)
    )
    return {str(product): float(avg) for product, avg in conn.execute(stmt)}


def _average_curve(
    conn: Connection, where: list[ColumnElement[bool]]
) -> list[tuple[datetime, float]]:
    total = int(conn.scalar(select(func.count()).select_from(ProcessedOrder).where(*where)) or 0)
    if total == 0:
        return []
    order = (ProcessedOrder.processed_at, ProcessedOrder.order_id)
    ranked = (
        select(
            ProcessedOrder.processed_at.label("at"),
            func.avg(ProcessedOrder.price).over(order_by=order, rows=(None, 0)).label("avg"),
            func.row_number().over(order_by=order).label("rn"),
        )
        .where(*where)
        .subquery()
    )
    # Thin out evenly in SQL so a large table never travels to the report.
    step = max(1, math.ceil(total / CURVE_POINTS))
    keep = or_(ranked.c.rn % step == 0, ranked.c.rn == 1, ranked.c.rn == total)
    stmt = select(ranked.c.at, ranked.c.avg).where(keep).order_by(ranked.c.rn)
    return [(at, float(avg)) for at, avg in conn.execute(stmt)]  # aware: UtcDateTime


def _backlog(conn: Connection) -> dict[str, int]:
    counts = dict.fromkeys((status.value for status in DlqStatus), 0)
    stmt = select(DlqEvent.status, func.count()).group_by(DlqEvent.status)
    counts.update({str(status): int(n) for status, n in conn.execute(stmt)})
    return counts


def _oldest_unresolved(conn: Connection, failed_at: ColumnElement[Any]) -> datetime | None:
    stmt = select(func.min(failed_at)).where(DlqEvent.status.in_(UNRESOLVED))
    oldest: datetime | None = conn.scalar(stmt)  # aware on both stores: UtcDateTime
    return oldest


def _replay_stats(conn: Connection, since: datetime | None) -> ReplayStats:
    processed = replayed_copy_processed()
    stmt = select(func.count(), func.coalesce(func.sum(case((processed, 1), else_=0)), 0))
    stmt = stmt.where(DlqEvent.replayed_at.is_not(None))
    if since is not None:
        stmt = stmt.where(DlqEvent.replayed_at >= since)
    replayed, succeeded = conn.execute(stmt).one()
    return ReplayStats(replayed=int(replayed), succeeded=int(succeeded))
