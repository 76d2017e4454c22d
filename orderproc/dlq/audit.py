"""The audit trail: one append-only ``dlq_audit`` row per action on a DLQ event.

``AuditAction`` is the one list of the words stored in ``dlq_audit.action`` (``audit``
takes nothing else, and mypy checks every caller); ``last_run`` reads when the drain and
the replay last did something.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from orderproc.models import DlqStatus
from orderproc.store.tables import AuditLog


class AuditAction(StrEnum):
    """The words ``dlq_audit.action`` holds: what happened to a DLQ event."""

    DRAINED = "drained"
    """The drain stored a new failure."""
    COPY = "copy"
    """The drain met another DLQ record of a failure it had."""
    APPROVED = DlqStatus.APPROVED.value
    REJECTED = DlqStatus.REJECTED.value
    EDITED = "edited"
    REPLAYED = DlqStatus.REPLAYED.value
    PARKED = DlqStatus.PARKED.value
    UNPUBLISHED = "unpublished"
    """A replay's transaction aborted: the row is replayable again."""
    RETURNED = "returned"
    """A replay run paused (or stopped) before publishing the row: it is approved again."""
    FOLDED = "folded"
    """Migration 0002 folded duplicate rows of one failure into this one."""


REVIEW_ACTIONS = (AuditAction.APPROVED, AuditAction.REJECTED, AuditAction.EDITED)
"""What reviewers do (the rest is the drain's and the replay's)."""


@dataclass(frozen=True, slots=True)
class LastRun:
    """The newest audit row of some actions: when, and by whom (the run's actor)."""

    at: datetime
    actor: str


def audit(
    conn: Connection,
    ids: Sequence[int],
    action: AuditAction,
    actor: str,
    *,
    at: datetime,
    note: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    if not ids:
        return
    rows = [
        {
            "dlq_event_id": i,
            "action": action.value,
            "actor": actor[:200],  # the column's width: Airflow run ids can be longer
            "at": at,
            "note": note,
            "details": details,
        }
        for i in ids
    ]
    conn.execute(insert(AuditLog), rows)


def last_run(engine: Engine, actions: Sequence[AuditAction]) -> LastRun | None:
    """The newest audit row whose action is one of ``actions`` (None: there is none)."""
    newest = select(func.max(AuditLog.id)).where(AuditLog.action.in_([a.value for a in actions]))
    stmt = select(AuditLog.at, AuditLog.actor).where(AuditLog.id == newest.scalar_subquery())
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else LastRun(row.at, row.actor)
