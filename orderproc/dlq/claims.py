"""The replay's ledger in the DLQ store: claims, copies pending in a Kafka transaction,
and what a replay recorded as published.

Only the run holding the replay lease writes here (``orderproc.dlq.lease``), and each
write is a transaction of that lease, refused once a newer run took over. A row the run
works on is *claimed* (``claimed_by``: one claimer per task attempt). Before its Kafka
transaction commits, the run records where the broker put the copy and marks the row
``replay_pending``; after the commit, the row becomes ``replayed``. A run that takes
the lease fences every earlier one in Kafka (``orderproc.dlq.replay``), so it may take
over their claims and resolve their pending rows: each pending row's copy is either
committed (the row is marked replayed) or was aborted (the row is freed). Every
transition is a conditional ``UPDATE`` with its audit row, and moves the row's place in
its run (``orderproc.dlq.runs``) in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Engine, Update, select, update
from sqlalchemy.orm import Session

from orderproc.clock import utcnow
from orderproc.dlq.audit import AuditAction, audit
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.lease import Lease
from orderproc.dlq.runs import RowOutcome, reserved_elsewhere
from orderproc.errors import ReviewError
from orderproc.models import DlqStatus
from orderproc.store.tables import DlqEvent, ReplayRunRow

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
        stmt = select(DlqEvent).where(
            *flt.clauses(),
            DlqEvent.replay_pending.is_(False),
            ~reserved_elsewhere("", utcnow()),
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt.order_by(DlqEvent.id).limit(limit)))

    def claim(
        self, flt: EventFilter, *, lease: Lease, limit: int, queued: bool = False
    ) -> list[DlqEvent]:
        """Claim up to ``limit`` matching events for the lease's run (with ``queued``:
        only rows of its selection it has not published yet).

        Its run holds the replay lease, so no other run is claiming now: rows an earlier
        run still names (one that died, or was fenced) are taken over. Rows with a copy
        pending in a transaction never are: the run resolves them first. Rows another
        run reserves (it waits for its canary's outcomes) are left to it.
        """
        claimable = [
            *flt.clauses(),
            DlqEvent.replay_pending.is_(False),
            ~reserved_elsewhere(lease.replay_id, utcnow()),
        ]
        if queued:
            mine = select(ReplayRunRow.event_id).where(
                ReplayRunRow.replay_id == lease.replay_id,
                ReplayRunRow.outcome == RowOutcome.QUEUED,
            )
            claimable.append(DlqEvent.id.in_(mine))
        candidates = (
            select(DlqEvent.id)
            .where(*claimable)
            .order_by(DlqEvent.id)
            .limit(limit)
            # In id order, as every writer (PostgreSQL; SQLite ignores it). FOR NO KEY
            # UPDATE, the lock the UPDATE takes: it does not wait for the drain's key-share
            # locks (a copy row inserted for the event), which are not taken in id order.
            .with_for_update(key_share=True)
        )
        with lease.transaction() as conn:
            # Two statements, not UPDATE ... IN (subquery): PostgreSQL may re-run a LIMIT
            # subquery per row and claim more than ``limit`` rows.
            picked = list(conn.scalars(candidates))
            stmt = (
                update(DlqEvent)
                .where(DlqEvent.id.in_(picked), *claimable)
                .values(claimed_by=lease.claimer, claimed_at=utcnow())
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

    def release(self, lease: Lease) -> None:
        """Give up the run's claims on rows with nothing pending.

        Not a lease transaction: a run that was fenced frees what it still names (rows it
        claimed that no newer run took), so none stays claimed by a run that has ended.
        """
        mine = (DlqEvent.claimed_by == lease.claimer) & DlqEvent.replay_pending.is_(False)
        with self.engine.begin() as conn:
            _lock_in_order(conn, mine)
            conn.execute(update(DlqEvent).where(mine).values(**_FREE))

    def release_ended(self, lease: Lease) -> int:
        """Free every claim an ended run left on rows with nothing pending (the lease's run
        holds the replay, so every other claimer has ended); return how many."""
        ended = (
            DlqEvent.claimed_by.is_not(None)
            & (DlqEvent.claimed_by != lease.claimer)
            & DlqEvent.replay_pending.is_(False)
        )
        with lease.transaction() as conn:
            _lock_in_order(conn, ended)
            return int(conn.execute(update(DlqEvent).where(ended).values(**_FREE)).rowcount)

    def mark_pending(self, deliveries: Sequence[Delivered], *, lease: Lease) -> None:
        """Record where the broker put each copy, before its transaction commits.

        Raises:
            ReplayFencedError: a newer run took the lease (abort the transaction).
            ReviewError: a claim was lost (abort the transaction).
        """
        if not deliveries:
            return
        with lease.transaction() as conn:
            for d in _by_id(deliveries):
                stmt = (
                    update(DlqEvent)
                    .where(DlqEvent.id == d.event_id, DlqEvent.claimed_by == lease.claimer)
                    .values(replay_pending=True, replay_id=lease.replay_id,
                            replay_partition=d.partition, replay_offset=d.offset)
                )  # fmt: skip
                if conn.execute(stmt).rowcount != 1:
                    raise ReviewError(f"lost the claim on event {d.event_id}; nothing published")

    def pending(self) -> list[DlqEvent]:
        """Rows whose copy is in a transaction whose outcome is not recorded yet."""
        with Session(self.engine, expire_on_commit=False) as session:
            stmt = select(DlqEvent).where(DlqEvent.replay_pending.is_(True)).order_by(DlqEvent.id)
            return list(session.scalars(stmt))

    def mark_replayed(self, deliveries: Sequence[Delivered], *, lease: Lease, actor: str) -> None:
        """Record committed copies: status, coordinates, count, audit; release the claims;
        each row ``pending`` in the run that published it (its ``replay_id``)."""
        if not deliveries:
            return
        now = utcnow()
        with lease.transaction() as conn:
            for d in _by_id(deliveries):
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
                        version=DlqEvent.version + 1,
                        **_FREE,
                    )
                )
                details = {"topic": d.topic, "partition": d.partition, "offset": d.offset}
                if conn.execute(stmt).rowcount == 1:
                    audit(conn, [d.event_id], AuditAction.REPLAYED, actor, at=now,
                          details=details)  # fmt: skip
                    conn.execute(_published(d.event_id))

    def clear_pending(self, ids: Sequence[int], *, lease: Lease, actor: str, note: str) -> None:
        """Copies whose transaction was aborted: the rows are replayable again."""
        if not ids:
            return
        now = utcnow()
        stmt = (
            update(DlqEvent)
            .where(DlqEvent.id.in_(ids), DlqEvent.replay_pending.is_(True))
            .values(replay_pending=False, replay_partition=None, replay_offset=None, **_FREE)
        )
        with lease.transaction() as conn:
            _lock_in_order(conn, DlqEvent.id.in_(ids))
            conn.execute(stmt)
            audit(conn, list(ids), AuditAction.UNPUBLISHED, actor, at=now, note=note)

    def park(self, ids: Sequence[int], *, lease: Lease, actor: str, note: str) -> None:
        """Move claimed events over the replay cap to ``parked``."""
        self._finish(ids, DlqStatus.PARKED, AuditAction.PARKED, lease=lease, actor=actor,
                     note=note)  # fmt: skip

    def reject_claimed(self, event_id: int, *, lease: Lease, actor: str, note: str) -> None:
        """Reject a claimed event whose order cannot be re-encoded."""
        self._finish([event_id], DlqStatus.REJECTED, AuditAction.REJECTED, lease=lease,
                     actor=actor, note=note)  # fmt: skip

    def _finish(
        self,
        ids: Sequence[int],
        target: DlqStatus,
        action: AuditAction,
        *,
        lease: Lease,
        actor: str,
        note: str,
    ) -> None:
        if not ids:
            return
        now = utcnow()
        stmt = (
            update(DlqEvent)
            .where(DlqEvent.id.in_(ids), DlqEvent.claimed_by == lease.claimer)
            .values(status=target.value, version=DlqEvent.version + 1, **_FREE)
        )
        mine = update(ReplayRunRow).where(
            ReplayRunRow.replay_id == lease.replay_id, ReplayRunRow.event_id.in_(ids)
        )
        with lease.transaction() as conn:
            _lock_in_order(conn, DlqEvent.id.in_(ids))
            if conn.execute(stmt).rowcount != len(ids):
                raise ReviewError(f"lost the claim on some of events {list(ids)}; nothing {action}")
            audit(conn, list(ids), action, actor, at=now, note=note)
            conn.execute(mine.values(outcome=RowOutcome.SKIPPED.value, note=note, decided_at=now))


def _by_id(deliveries: Sequence[Delivered]) -> list[Delivered]:
    """Delivery reports come in the broker's order: rows are written in id order instead,
    the order every writer of ``dlq_events`` keeps (the drain too), so no two writers wait
    for each other in a cycle (PostgreSQL would end one of them as a deadlock)."""
    return sorted(deliveries, key=lambda d: d.event_id)


def _lock_in_order(conn: Connection, where: ColumnElement[bool]) -> None:
    """Lock the rows an ``UPDATE ... WHERE`` will change, in id order, before it runs (an
    ``UPDATE`` of a set locks in scan order). SQLite holds the whole database instead."""
    if conn.dialect.name == "postgresql":
        locks = select(DlqEvent.id).where(where).order_by(DlqEvent.id)
        conn.execute(locks.with_for_update(key_share=True))  # as the claim: FOR NO KEY UPDATE


def _published(event_id: int) -> Update:
    """The row's place in the run that published it (the one its ``replay_id`` names):
    ``pending`` until the live consumer decides on the copy."""
    publisher = select(DlqEvent.replay_id).where(DlqEvent.id == event_id).scalar_subquery()
    return (
        update(ReplayRunRow)
        .where(
            ReplayRunRow.event_id == event_id,
            ReplayRunRow.replay_id == publisher,
            ReplayRunRow.outcome == RowOutcome.QUEUED,
        )
        .values(outcome=RowOutcome.PENDING.value)
    )
