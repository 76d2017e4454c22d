"""The replay's ledger in the DLQ store: claims, copies pending in a Kafka transaction,
and what a replay recorded as published.

A row a replay works on is *claimed* (``claimed_by``: one claimer per task attempt).
Before its Kafka transaction commits, the replay records where the broker put the
copy and marks the row ``replay_pending``; after the commit, the row becomes
``replayed``. A replay that starts fences every earlier one (``orderproc.dlq.replay``),
so it may take over their claims and resolve their pending rows: each pending row's
copy is either committed (the row is marked replayed) or was aborted (the row is
freed). Every transition is a conditional ``UPDATE`` with its audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from orderproc.clock import utcnow
from orderproc.dlq.audit import audit
from orderproc.dlq.filters import EventFilter
from orderproc.errors import ReviewError
from orderproc.models import DlqStatus
from orderproc.store.tables import DlqEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker stored the replayed copy of a DLQ event."""

    event_id: int
    topic: str
    partition: int
    offset: int


_FREE = {"claimed_by": None, "claimed_at": None}


class Claims:
    """The replay's writes into the DLQ store."""

    engine: Engine

    def select_for_replay(self, flt: EventFilter, *, limit: int) -> list[DlqEvent]:
        """The events a replay would take now (read only: the dry run)."""
        stmt = select(DlqEvent).where(*flt.clauses(), DlqEvent.replay_pending.is_(False))
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt.order_by(DlqEvent.id).limit(limit)))

    def claim(
        self, flt: EventFilter, *, claimer: str, limit: int, take_over: bool = False
    ) -> list[DlqEvent]:
        """Atomically claim up to ``limit`` matching events for ``claimer``.

        Free rows and rows ``claimer`` holds already are claimable; with ``take_over``
        (a replay that has fenced every earlier one) rows other claimers hold too.
        Rows with a copy pending in a transaction never are: they are resolved first.
        """
        free = or_(DlqEvent.claimed_by.is_(None), DlqEvent.claimed_by == claimer)
        if take_over:
            free = or_(free, DlqEvent.claimed_by.is_not(None))
        claimable = [*flt.clauses(), free, DlqEvent.replay_pending.is_(False)]
        candidates = (
            select(DlqEvent.id)
            .where(*claimable)
            .order_by(DlqEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL only; SQLite ignores it
        )
        with self.engine.begin() as conn:
            # Two statements, not UPDATE ... IN (subquery): PostgreSQL may re-run a LIMIT
            # subquery per row and claim more than ``limit`` rows.
            picked = list(conn.scalars(candidates))
            stmt = (
                update(DlqEvent)
                .where(DlqEvent.id.in_(picked), *claimable)
                .values(claimed_by=claimer, claimed_at=utcnow())
                .returning(DlqEvent.id)
            )
            ids = sorted(int(i) for i in conn.scalars(stmt)) if picked else []
        return self._rows(ids)

    def _rows(self, ids: Sequence[int]) -> list[DlqEvent]:
        if not ids:
            return []
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(select(DlqEvent).where(DlqEvent.id.in_(ids)))
            return sorted(rows, key=lambda e: e.id)

    def release(self, *, claimer: str, ids: Sequence[int] | None = None) -> None:
        """Give up ``claimer``'s claims (all, or ``ids``) on rows with nothing pending."""
        stmt = update(DlqEvent).where(
            DlqEvent.claimed_by == claimer, DlqEvent.replay_pending.is_(False)
        )
        if ids is not None:
            stmt = stmt.where(DlqEvent.id.in_(ids))
        with self.engine.begin() as conn:
            conn.execute(stmt.values(**_FREE))

    def mark_pending(
        self, deliveries: Sequence[Delivered], *, claimer: str, replay_id: str
    ) -> None:
        """Record where the broker put each copy, before its transaction commits.

        Raises:
            ReviewError: a claim was lost (the caller must abort the transaction).
        """
        if not deliveries:
            return
        with self.engine.begin() as conn:
            for d in deliveries:
                stmt = (
                    update(DlqEvent)
                    .where(DlqEvent.id == d.event_id, DlqEvent.claimed_by == claimer)
                    .values(replay_pending=True, replay_id=replay_id,
                            replay_partition=d.partition, replay_offset=d.offset)
                )  # fmt: skip
                if conn.execute(stmt).rowcount != 1:
                    raise ReviewError(f"lost the claim on event {d.event_id}; nothing published")

    def pending(self) -> list[DlqEvent]:
        """Rows whose copy is in a transaction whose outcome is not recorded yet."""
        with Session(self.engine, expire_on_commit=False) as session:
            stmt = select(DlqEvent).where(DlqEvent.replay_pending.is_(True)).order_by(DlqEvent.id)
            return list(session.scalars(stmt))

    def mark_replayed(self, deliveries: Sequence[Delivered], *, actor: str) -> None:
        """Record committed copies: status, coordinates, count, audit; release the claims."""
        if not deliveries:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            for d in deliveries:
                stmt = (
                    update(DlqEvent)
                    .where(DlqEvent.id == d.event_id, DlqEvent.status != DlqStatus.REPLAYED.value)
                    .values(
                        status=DlqStatus.REPLAYED.value,
                        replayed_at=now,
                        replay_partition=d.partition,
                        replay_offset=d.offset,
                        replay_count=DlqEvent.replay_count + 1,
                        replay_pending=False,
                        **_FREE,
                    )
                )
                details = {"topic": d.topic, "partition": d.partition, "offset": d.offset}
                if conn.execute(stmt).rowcount == 1:
                    audit(conn, [d.event_id], "replayed", actor, at=now, details=details)

    def clear_pending(self, ids: Sequence[int], *, actor: str, note: str) -> None:
        """Copies whose transaction was aborted: the rows are replayable again."""
        if not ids:
            return
        now = utcnow()
        stmt = (
            update(DlqEvent)
            .where(DlqEvent.id.in_(ids), DlqEvent.replay_pending.is_(True))
            .values(replay_pending=False, replay_partition=None, replay_offset=None, **_FREE)
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)
            audit(conn, list(ids), "unpublished", actor, at=now, note=note)

    def park(self, ids: Sequence[int], *, claimer: str, actor: str, note: str) -> None:
        """Move claimed events over the replay cap to ``parked``."""
        self._finish(ids, DlqStatus.PARKED, "parked", claimer=claimer, actor=actor, note=note)

    def reject_claimed(self, event_id: int, *, claimer: str, actor: str, note: str) -> None:
        """Reject a claimed event whose order cannot be re-encoded."""
        self._finish(
            [event_id], DlqStatus.REJECTED, "rejected", claimer=claimer, actor=actor, note=note
        )

    def _finish(
        self,
        ids: Sequence[int],
        target: DlqStatus,
        action: str,
        *,
        claimer: str,
        actor: str,
        note: str,
    ) -> None:
        if not ids:
            return
        now = utcnow()
        stmt = (
            update(DlqEvent)
            .where(DlqEvent.id.in_(ids), DlqEvent.claimed_by == claimer)
            .values(status=target.value, **_FREE)
        )
        with self.engine.begin() as conn:
            if conn.execute(stmt).rowcount != len(ids):
                raise ReviewError(f"lost the claim on some of events {list(ids)}; nothing {action}")
            audit(conn, list(ids), action, actor, at=now, note=note)
