"""The DLQ store: drained events, their review state, replay claims and the audit trail.

Every state change happens in one transaction together with its ``dlq_audit`` row,
and every transition is a conditional ``UPDATE`` (``... WHERE status = 'new'``), so
two actors racing on the same event cannot both win.

Replay claims: ``claim`` picks candidate ids (``SELECT ... FOR UPDATE SKIP LOCKED``
on PostgreSQL, so a concurrent run skips rows another run is claiming instead of
waiting for them) and marks them ``claimed_by = <replay id>`` with an ``UPDATE``
that re-checks ``claimed_by IS NULL``. The re-check runs on the latest committed
row version (PostgreSQL) or under the database write lock (SQLite), so a row is
claimed by at most one run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.orm import Session

from orderproc.clock import utcnow
from orderproc.dlq.audit import audit
from orderproc.dlq.backlog import Backlog
from orderproc.dlq.claims import Claims
from orderproc.dlq.corrections import payload_of, validated_order
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.intake import Intake
from orderproc.errors import ReviewError, UnknownEventError
from orderproc.models import DlqStatus
from orderproc.serde import OrderSchema
from orderproc.store.tables import AuditLog, DlqEvent

REVIEWABLE = (DlqStatus.NEW.value,)
"""Only records nobody has decided on yet can be approved or rejected."""

EDITABLE = (DlqStatus.NEW.value, DlqStatus.APPROVED.value)
"""A correction makes sense until the record is replayed, rejected or parked."""

log = logging.getLogger(__name__)


class _NotAll(Exception):
    """A conditional update did not match every event it should have."""


class DlqStore(Intake, Claims, Backlog):
    """DLQ events and their audit trail in PostgreSQL or SQLite (the drain's writes are
    ``Intake``'s, the replay's ``Claims``', the review page's reads ``Backlog``'s)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)

    # -- queries -------------------------------------------------------------------

    def list_events(self, flt: EventFilter | None = None, *, limit: int = 100) -> list[DlqEvent]:
        """Events matching ``flt``, oldest first."""
        stmt = select(DlqEvent).where(*(flt or EventFilter()).clauses())
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt.order_by(DlqEvent.id).limit(limit)))

    def get(self, event_id: int) -> DlqEvent:
        """One event; ``UnknownEventError`` if there is none with that id."""
        with Session(self.engine, expire_on_commit=False) as session:
            event = session.get(DlqEvent, event_id)
        if event is None:
            raise UnknownEventError(f"no DLQ event with id {event_id}")
        return event

    def audit_trail(self, event_id: int) -> list[AuditLog]:
        """Every action on one event, oldest first."""
        stmt = select(AuditLog).where(AuditLog.dlq_event_id == event_id).order_by(AuditLog.id)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    # -- review --------------------------------------------------------------------

    def approve(self, ids: Sequence[int], *, actor: str, note: str | None = None) -> None:
        """Approve ``new`` events for replay (all or none)."""
        self._review(ids, DlqStatus.APPROVED, "approve", actor=actor, note=note)

    def reject(self, ids: Sequence[int], *, actor: str, note: str | None = None) -> None:
        """Reject ``new`` events: they will never be replayed (all or none)."""
        self._review(ids, DlqStatus.REJECTED, "reject", actor=actor, note=note)

    def _review(
        self, ids: Sequence[int], target: DlqStatus, verb: str, *, actor: str, note: str | None
    ) -> None:
        wanted = sorted(set(ids))
        now = utcnow()
        stmt = (
            update(DlqEvent)
            .where(DlqEvent.id.in_(wanted), DlqEvent.status.in_(REVIEWABLE))
            .where(DlqEvent.claimed_by.is_(None))
            .values(status=target.value, reviewed_by=actor[:200], reviewed_at=now, review_note=note)
        )
        with self._all_or_nothing(verb, wanted, REVIEWABLE) as conn:
            if conn.execute(stmt).rowcount != len(wanted):
                raise _NotAll
            audit(conn, wanted, target.value, actor, at=now, note=note)

    def edit(
        self,
        event_id: int,
        changes: Mapping[str, Any],
        *,
        actor: str,
        note: str | None = None,
        schema: OrderSchema | None = None,
    ) -> dict[str, Any]:
        """Store a corrected order for replay; return it.

        The correction is the current payload (an earlier correction, else the
        failed order) with ``changes`` applied, and must encode with ``schema`` (the
        one the replay writes with; default the local one) and pass the order's
        validation.
        """
        event = self.get(event_id)
        if event.status not in EDITABLE:
            raise ReviewError(
                f"cannot edit {event_id}: status is {event.status} "
                f"(only {'/'.join(EDITABLE)} records can be edited)"
            )
        before = payload_of(event) or {}
        corrected = validated_order({**before, **changes}, context=f"event {event_id}",
                                    schema=schema)  # fmt: skip
        now = utcnow()
        stmt = (
            update(DlqEvent)
            .where(DlqEvent.id == event_id, DlqEvent.status.in_(EDITABLE))
            .where(DlqEvent.claimed_by.is_(None))
            .values(corrected_payload=corrected)
        )
        details = {"before": before, "after": corrected, "changes": dict(changes)}
        with self._all_or_nothing("edit", [event_id], EDITABLE) as conn:
            if conn.execute(stmt).rowcount != 1:
                raise _NotAll
            audit(conn, [event_id], "edited", actor, at=now, note=note, details=details)
        return corrected

    @contextmanager
    def _all_or_nothing(
        self, verb: str, ids: Sequence[int], allowed: Sequence[str]
    ) -> Iterator[Connection]:
        """A transaction that is rolled back whole when the block raises ``_NotAll``; the
        error then names the first event that blocked it, as the events are *after* the
        rollback (never one this call changed and then undid)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except _NotAll:
            with self.engine.connect() as conn:
                why = _why_not(conn, ids, allowed)
            raise ReviewError(f"cannot {verb}, nothing changed: {why}") from None


# -- helpers ---------------------------------------------------------------------------


def _why_not(conn: Connection, ids: Sequence[int], allowed: Sequence[str]) -> str:
    """One line naming the first event that blocked an action, and why."""
    rows = conn.execute(select(DlqEvent.id, DlqEvent.status).where(DlqEvent.id.in_(ids)))
    found: dict[int, str] = {row.id: row.status for row in rows}
    claimed = set(
        conn.scalars(
            select(DlqEvent.id).where(DlqEvent.id.in_(ids), DlqEvent.claimed_by.is_not(None))
        )
    )
    for event_id in ids:
        if event_id not in found:
            return f"no DLQ event with id {event_id}"
        if found[event_id] not in allowed:
            return (
                f"event {event_id} is {found[event_id]} (only {'/'.join(allowed)} records qualify)"
            )
        if event_id in claimed:
            return f"event {event_id} is being replayed right now"
    return "the events changed concurrently; try again"
