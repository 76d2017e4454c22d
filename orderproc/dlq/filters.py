"""Which DLQ events a list, a bulk action or a replay takes: one filter, turned into SQL."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement, func

from orderproc.clock import as_utc
from orderproc.store.tables import DlqEvent


def failed_at() -> ColumnElement[datetime]:
    """When a row's record was dead-lettered (or drained, for records whose envelope had
    no time): the time every window, sort and age of the DLQ store uses."""
    return func.coalesce(DlqEvent.dead_lettered_at, DlqEvent.drained_at)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which DLQ events to list or replay; empty fields do not filter.

    Every field is an exact match (values are bound parameters, never SQL text).
    ``since``/``until`` bound ``failed_at``.
    """

    status: str | None = None
    order_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] = ()
    products: tuple[str, ...] = ()

    def clauses(self) -> list[ColumnElement[bool]]:
        """SQL conditions for this filter."""
        conditions: list[ColumnElement[bool]] = []
        if self.status:
            conditions.append(DlqEvent.status == self.status)
        if self.ids:
            conditions.append(DlqEvent.id.in_(self.ids))
        if self.order_ids:
            conditions.append(DlqEvent.order_id.in_(self.order_ids))
        if self.products:
            conditions.append(DlqEvent.product.in_(self.products))
        if self.reasons:
            conditions.append(DlqEvent.reason.in_(self.reasons))
        if self.categories:
            conditions.append(DlqEvent.category.in_(self.categories))
        if self.since:
            conditions.append(failed_at() >= as_utc(self.since))
        if self.until:
            conditions.append(failed_at() < as_utc(self.until))
        return conditions

    def with_status(self, status: str | None) -> EventFilter:
        """The same filter for another status (None: any)."""
        return replace(self, status=status)
