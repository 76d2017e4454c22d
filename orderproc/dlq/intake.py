"""What the drain stores: one review row per failure, one copy row per DLQ record.

The transport can deliver one failure several times (a consumer killed before its
offsets moved dead-letters the same record again; at-least-once mode writes the
DLQ outside any transaction). The drain stores each DLQ record once, in
``dlq_copies`` (unique on its DLQ coordinates, so re-reading a record adds nothing),
and each failure once, in ``dlq_events`` (unique on ``failure_key``: consumer
group, source coordinates and replay lineage). A second copy of a known failure
adds a copy row, counts in ``dlq_events.copies`` and writes a ``copy`` audit row:
reviewers see the failure once, and how often it arrived.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError

from orderproc.clock import utcnow
from orderproc.dlq.audit import AuditAction, audit
from orderproc.store.engine import store_error, upsert_ignore
from orderproc.store.tables import DlqCopy, DlqEvent


@dataclass
class Stored:
    """What one ``Intake.insert_events`` did with its records."""

    new_ids: list[int] = field(default_factory=list)
    """Failures seen for the first time (new review rows)."""
    copies: int = 0
    """Records that were another copy of a failure already stored."""
    reread: int = 0
    """Records already stored (the same DLQ coordinates read again)."""

    def __add__(self, other: Stored) -> Stored:
        return Stored(
            self.new_ids + other.new_ids, self.copies + other.copies, self.reread + other.reread
        )


class Intake:
    """The drain's writes into the DLQ store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = upsert_ignore(engine, DlqEvent.__table__).returning(
            DlqEvent.__table__.c.id, DlqEvent.__table__.c.failure_key
        )
        self._copy = upsert_ignore(engine, DlqCopy.__table__)

    def insert_events(self, rows: Sequence[dict[str, Any]], *, actor: str) -> Stored:
        """Store drained records (``event_row``s) in one transaction.

        A record of an order that was dead-lettered before inherits the highest
        earlier ``replay_count`` (if larger than its own), so the replay cap spans
        cycles.

        Raises:
            RowsRefusedError: the database refused some row's data (nothing was written).
            StoreError: the database could not be reached.
        """
        if not rows:
            return Stored()
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                fresh = _unseen(conn, rows)
                result = Stored(reread=len(rows) - len(fresh))
                if not fresh:
                    return result
                prepared = _inherit_replay_counts(conn, fresh)
                new = {key: int(i) for i, key in conn.execute(self._insert, prepared)}
                ids = _event_ids(conn, {r["failure_key"] for r in prepared}, new)
                conn.execute(self._copy, [_copy_row(r, ids[r["failure_key"]], now)
                                          for r in prepared])  # fmt: skip
                result.new_ids = sorted(new.values())
                result.copies = self._count_copies(conn, prepared, ids, new, actor, now)
                audit(conn, result.new_ids, AuditAction.DRAINED, actor, at=now)
                return result
        except (SQLAlchemyError, UnicodeEncodeError, ValueError) as exc:
            raise store_error(f"could not store {len(rows)} DLQ events", exc) from exc

    @staticmethod
    def _count_copies(
        conn: Connection,
        rows: Sequence[dict[str, Any]],
        ids: dict[str, int],
        new: dict[str, int],
        actor: str,
        now: Any,
    ) -> int:
        """Add this batch's extra copies to each failure's count; return how many."""
        per_key = Counter(r["failure_key"] for r in rows)
        extra = {key: n - (1 if key in new else 0) for key, n in per_key.items()}
        for key, n in extra.items():
            if n <= 0:
                continue
            conn.execute(
                update(DlqEvent).where(DlqEvent.id == ids[key]).values(copies=DlqEvent.copies + n)
            )
            audit(conn, [ids[key]], AuditAction.COPY, actor, at=now, details={"copies_added": n})
        return sum(n for n in extra.values() if n > 0)


def _unseen(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose DLQ coordinates are not stored yet (and each once)."""
    coords = {(r["dlq_topic"], r["dlq_partition"], r["dlq_offset"]): r for r in rows}
    columns = tuple_(DlqCopy.dlq_topic, DlqCopy.dlq_partition, DlqCopy.dlq_offset)
    stmt = select(DlqCopy.dlq_topic, DlqCopy.dlq_partition, DlqCopy.dlq_offset)
    seen = {tuple(row) for row in conn.execute(stmt.where(columns.in_(list(coords))))}
    return [row for key, row in coords.items() if key not in seen]


def _event_ids(conn: Connection, keys: set[str], new: dict[str, int]) -> dict[str, int]:
    ids = dict(new)
    missing = keys - set(new)
    if missing:
        stmt = select(DlqEvent.failure_key, DlqEvent.id).where(DlqEvent.failure_key.in_(missing))
        ids.update({key: int(i) for key, i in conn.execute(stmt)})
    return ids


def _copy_row(row: dict[str, Any], event_id: int, now: Any) -> dict[str, Any]:
    return {
        "dlq_topic": row["dlq_topic"],
        "dlq_partition": row["dlq_partition"],
        "dlq_offset": row["dlq_offset"],
        "event_id": event_id,
        "drained_at": row.get("drained_at") or now,
    }


def _inherit_replay_counts(
    conn: Connection, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    order_ids = {r["order_id"] for r in rows if r.get("order_id")}
    if not order_ids:
        return list(rows)
    stmt = (
        select(DlqEvent.order_id, func.max(DlqEvent.replay_count))
        .where(DlqEvent.order_id.in_(order_ids))
        .group_by(DlqEvent.order_id)
    )
    earlier = {oid: int(n or 0) for oid, n in conn.execute(stmt)}
    out = []
    for row in rows:
        inherited = earlier.get(row.get("order_id"), 0)
        out.append({**row, "replay_count": max(int(row.get("replay_count") or 0), inherited)})
    return out
