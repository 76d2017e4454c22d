"""Which DLQ events a list, a bulk action or a replay takes: one filter, turned into SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func

from orderproc.clock import as_utc
from orderproc.store.tables import DlqEvent


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which DLQ events to list or replay; empty fields do not filter.

    ``since``/``until`` bound the time the record was dead-lettered (or drained,
    for records whose envelope had no time).
    """

    status: str | None = None
    order_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        """SQL conditions for this filter."""
        failed_at = func.coalesce(DlqEvent.dead_lettered_at, DlqEvent.drained_at)
        conditions: list[ColumnElement[bool]] = []
        if self.status:
            conditions.append(DlqEvent.status == self.status)
        if self.order_ids:
            conditions.append(DlqEvent.order_id.in_(self.order_ids))
        if self.reasons:
            conditions.append(DlqEvent.reason.in_(self.reasons))
        if self.categories:
            conditions.append(DlqEvent.category.in_(self.categories))
        if self.since:
            conditions.append(failed_at >= as_utc(self.since))
        if self.until:
            conditions.append(failed_at < as_utc(self.until))
        return conditions
