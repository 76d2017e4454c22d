"""The audit trail: one append-only ``dlq_audit`` row per action on a DLQ event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert

from orderproc.store.tables import AuditLog


class AuditAction(StrEnum):
    """The words ``dlq_audit.action`` holds: what happened to a DLQ event."""

    DRAINED = "drained"
    """The drain stored the failure (a new review row)."""
    COPY = "copy"
    """Another DLQ record of a failure already stored arrived."""
    APPROVED = "approved"
    REJECTED = "rejected"
    EDITED = "edited"
    PARKED = "parked"
    """A replay found the order at its replay cap."""
    REPLAYED = "replayed"
    UNPUBLISHED = "unpublished"
    """A replay's transaction was aborted: the row is replayable again."""
    FOLDED = "folded"
    """Migration 0002 folded duplicate rows of one failure into this one."""


REVIEW_ACTIONS = (AuditAction.APPROVED, AuditAction.REJECTED, AuditAction.EDITED)
"""What reviewers do (the rest is the drain's and the replay's)."""


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
