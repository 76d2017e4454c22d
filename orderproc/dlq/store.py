"""The DLQ store: drained events, their review state, replay claims and the audit trail.

Every state change happens in one transaction together with its ``dlq_audit`` row,
and every transition is a conditional ``UPDATE`` (``... WHERE status = 'new'``), so
two actors racing on the same event cannot both win.

Reviewers act on what they saw: each row has a ``version`` that every change a
reviewer acts on (approve, reject, edit, replayed, parked) moves by one. An action
names the version its view showed, and its ``UPDATE`` matches only that version, so
an action from a stale view is refused with a line naming the change in between
(``ConflictError``), never applied over it. The condition runs on the latest
committed row version (PostgreSQL) or under the database write lock (SQLite).

Replay claims are the replay's (``orderproc.dlq.claims``), written only by the run
holding the replay lease; a reviewer cannot act on a row a replay has claimed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Update, select, update
from sqlalchemy.orm import Session

from orderproc.clock import utcnow
from orderproc.dlq.audit import REVIEW_ACTIONS, AuditAction, audit
from orderproc.dlq.backlog import Backlog
from orderproc.dlq.claims import Claims
from orderproc.dlq.corrections import payload_of, validated_order
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.intake import Intake
from orderproc.dlq.lease import live_holder
from orderproc.dlq.outcomes import Outcomes
from orderproc.dlq.runs import Runs
from orderproc.errors import ConflictError, ReviewError, UnknownEventError
from orderproc.models import DlqStatus
from orderproc.serde import OrderSchema
from orderproc.store.tables import AuditLog, DlqEvent

REVIEWABLE = (DlqStatus.NEW.value,)
"""Only records nobody has decided on yet can be approved or rejected."""

EDITABLE = (DlqStatus.NEW.value, DlqStatus.APPROVED.value)
"""A correction makes sense until the record is replayed, rejected or parked."""

log = logging.getLogger(__name__)


class DlqStore(Intake, Claims, Runs, Outcomes, Backlog):
    """DLQ events and their audit trail in PostgreSQL or SQLite (the drain's writes are
    ``Intake``'s, the replay's ``Claims``' and ``Runs``', what became of replayed copies
    ``Outcomes``', the review page's reads ``Backlog``'s)."""

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

    def approve(
        self,
        ids: Sequence[int],
        *,
        actor: str,
        note: str | None = None,
        seen: Mapping[int, int] | None = None,
        partial: bool = False,
    ) -> Reviewed:
        """Approve ``new`` events for replay; see ``_review``."""
        return self._review(ids, DlqStatus.APPROVED, actor=actor, note=note, seen=seen,
                            partial=partial)  # fmt: skip

    def reject(
        self,
        ids: Sequence[int],
        *,
        actor: str,
        note: str | None = None,
        seen: Mapping[int, int] | None = None,
        partial: bool = False,
    ) -> Reviewed:
        """Reject ``new`` events: they will never be replayed; see ``_review``."""
        return self._review(ids, DlqStatus.REJECTED, actor=actor, note=note, seen=seen,
                            partial=partial)  # fmt: skip

    def _review(
        self,
        ids: Sequence[int],
        target: DlqStatus,
        *,
        actor: str,
        note: str | None,
        seen: Mapping[int, int] | None,
        partial: bool,
    ) -> Reviewed:
        """Move events to ``target``, each only if it is ``new``, not being replayed and,
        for the ids in ``seen``, still at the version the reviewer saw.

        All or nothing, unless ``partial`` (a bulk action): then the events that qualify
        move and the others are reported with why.

        Raises:
            ConflictError: an event changed since the reviewer's view (all or nothing).
            ReviewError: an event is unknown, not ``new`` or being replayed (all or nothing).
        """
        wanted = sorted(set(ids))
        now = utcnow()
        verb = "approve" if target is DlqStatus.APPROVED else "reject"
        action = AuditAction(target.value)
        done: list[int] = []
        blocked: int | None = None
        with self.engine.connect() as conn, conn.begin() as tx:
            for event_id in wanted:
                stmt = _reviewable(event_id, REVIEWABLE, (seen or {}).get(event_id)).values(
                    status=target.value, reviewed_by=actor[:200], reviewed_at=now,
                    review_note=note, version=DlqEvent.version + 1,
                )  # fmt: skip
                if conn.execute(stmt).rowcount == 1:
                    done.append(event_id)
                elif not partial:
                    blocked = event_id
                    tx.rollback()
                    break
            else:
                audit(conn, done, action, actor, at=now, note=note)
        if blocked is not None:  # said as the events are after the rollback
            raise self._refusal(f"cannot {verb}, nothing changed", blocked, REVIEWABLE, seen)
        skipped = {i: self._why_not(i, REVIEWABLE, seen) for i in wanted if i not in done}
        return Reviewed(done, skipped)

    def edit(
        self,
        event_id: int,
        changes: Mapping[str, Any],
        *,
        actor: str,
        note: str | None = None,
        seen: int | None = None,
        schema: OrderSchema | None = None,
    ) -> dict[str, Any]:
        """Store a corrected order for replay; return it.

        The correction is the current payload (an earlier correction, else the
        failed order) with ``changes`` applied, and must encode with ``schema`` (the
        one the replay writes with; default the local one) and pass the order's
        validation. It is saved only over the version it was made from (``seen``, the
        reviewer's view, else the one read here), never over another reviewer's change
        made in between.

        Raises:
            ConflictError: the event changed since ``seen`` (or since it was read here).
            ReviewError: the event cannot be edited, or the correction is not valid.
        """
        event = self.get(event_id)
        base = event.version if seen is None else seen
        if event.version != base:
            raise self._refusal("cannot edit, nothing changed", event_id, EDITABLE,
                                {event_id: base})  # fmt: skip
        if event.status not in EDITABLE:
            raise ReviewError(
                f"cannot edit {event_id}: status is {event.status} "
                f"(only {'/'.join(EDITABLE)} records can be edited)"
            )
        before = payload_of(event) or {}
        corrected = validated_order({**before, **changes}, context=f"event {event_id}",
                                    schema=schema)  # fmt: skip
        now = utcnow()
        stmt = _reviewable(event_id, EDITABLE, base).values(
            corrected_payload=corrected, version=DlqEvent.version + 1
        )
        details = {"before": before, "after": corrected, "changes": dict(changes)}
        with self.engine.begin() as conn:
            saved = conn.execute(stmt).rowcount == 1
            if saved:
                audit(conn, [event_id], AuditAction.EDITED, actor, at=now, note=note,
                      details=details)  # fmt: skip
        if not saved:
            raise self._refusal("cannot edit, nothing changed", event_id, EDITABLE,
                                {event_id: base})  # fmt: skip
        return corrected

    def _refusal(
        self, what: str, event_id: int, allowed: Sequence[str], seen: Mapping[int, int] | None
    ) -> ReviewError:
        """The error for an event that blocked an action, as the event is now."""
        why = self._why_not(event_id, allowed, seen)
        if why.startswith(CHANGED):
            return ConflictError(f"{what}: {why}")
        if why.startswith("no DLQ event"):
            return UnknownEventError(f"{what}: {why}")
        return ReviewError(f"{what}: {why}")

    def _why_not(
        self, event_id: int, allowed: Sequence[str], seen: Mapping[int, int] | None
    ) -> str:
        """One line naming why an event did not qualify for an action, as it is now."""
        with Session(self.engine, expire_on_commit=False) as session:
            event = session.get(DlqEvent, event_id)
            if event is None:
                return f"no DLQ event with id {event_id}"
            expected = (seen or {}).get(event_id)
            if expected is not None and event.version != expected:
                return f"{CHANGED} {event_id}: {_changes(session, event, expected)}; reload it"
        if event.status not in allowed:
            return f"event {event_id} is {event.status} (only {'/'.join(allowed)} records qualify)"
        live = live_holder(self.engine) if event.claimed_by is not None else None
        if event.claimed_by is not None and event.claimed_by == live:
            return f"event {event_id} is being replayed right now (claimed by {event.claimed_by})"
        if event.claimed_by is not None:
            return (
                f"event {event_id} is claimed by replay {event.claimed_by}, which has ended; "
                "the next replay run frees it"
            )
        return f"event {event_id} changed while this action ran; try again"


CHANGED = "another change was made to event"
"""How a refusal for a stale view begins (``ConflictError``)."""


@dataclass(frozen=True, slots=True)
class Reviewed:
    """What a review action did: the events it moved, and the others with why not."""

    done: list[int]
    skipped: dict[int, str] = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------


def _reviewable(event_id: int, allowed: Sequence[str], version: int | None) -> Update:
    """The conditional update of one event a reviewer acts on: in an ``allowed`` status,
    not claimed by a replay, and at ``version`` when the reviewer's view had one."""
    stmt = update(DlqEvent).where(
        DlqEvent.id == event_id, DlqEvent.status.in_(allowed), DlqEvent.claimed_by.is_(None)
    )
    return stmt if version is None else stmt.where(DlqEvent.version == version)


def _changes(session: Session, event: DlqEvent, seen: int) -> str:
    """What changed an event since version ``seen``: its latest change, in words."""
    versioned = (*REVIEW_ACTIONS, AuditAction.REPLAYED, AuditAction.PARKED)
    stmt = (
        select(AuditLog)
        .where(AuditLog.dlq_event_id == event.id, AuditLog.action.in_(versioned))
        .order_by(AuditLog.id.desc())
        .limit(max(1, event.version - seen))
    )
    trail = list(session.scalars(stmt))
    if not trail:
        return f"it is at version {event.version}, the view showed {seen}"
    last = trail[0]
    said = f"{last.action} by {last.actor} at {last.at:%Y-%m-%d %H:%M:%S} UTC"
    changed = (last.details or {}).get("changes")
    if isinstance(changed, dict) and changed:
        before = (last.details or {}).get("before") or {}
        said += (
            " ("
            + ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in sorted(changed.items()))
            + ")"
        )
    earlier = len(trail) - 1
    return said + (f", after {earlier} more change(s)" if earlier else "")
