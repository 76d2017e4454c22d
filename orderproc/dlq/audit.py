"""The audit trail: one append-only ``dlq_audit`` row per action on a DLQ event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from orderproc.store.tables import AuditLog


def audit(
    conn: Connection,
    ids: Sequence[int],
    action: str,
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
            "action": action,
            "actor": actor[:200],  # the column's width: Airflow run ids can be longer
            "at": at,
            "note": note,
            "details": details,
        }
        for i in ids
    ]
    conn.execute(insert(AuditLog), rows)
