"""A publishing replay run in the store: its record, its frozen selection and where each
row of it stands, carried from one of its tasks to the next.

A run's first turn (``orderproc.dlq.turn``) freezes its selection: the rows it takes,
each a ``replay_run_rows`` row ``queued``. Publishing a row's copy makes it ``pending``
(in the same transaction as the row becomes ``replayed``); the live consumer's verdict
makes it ``processed`` or ``failed_again`` (``orderproc.dlq.outcomes``). A row the run
never published ends ``returned`` (the run paused or stopped: it is ``approved`` again,
and an audit row says why) or ``skipped`` (parked, rejected, or taken by another run).

Between two turns a run that is ``running`` counts as alive until ``reserved_until``, and
*reserves* its queued rows till then: another run does not take them while the canary is
awaited. A run that died between turns (or inside one) stops reserving when that time
passes (or at once), and the next run to begin marks it ``stopped``: nothing stays stuck.
Every write of a turn goes through its lease (``Lease.transaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, exists, insert, select, update
from sqlalchemy.orm import Session

from orderproc.clock import utcnow
from orderproc.dlq.audit import AuditAction, audit
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.lease import Lease
from orderproc.dlq.plan import why_not_taken
from orderproc.models import DlqStatus
from orderproc.store.tables import DlqEvent, ReplayRun, ReplayRunRow


class RunState(StrEnum):
    """Where a publishing replay run stands (``replay_runs.state``)."""

    RUNNING = "running"
    """Publishing, or waiting for the outcomes of what it published."""
    PAUSED = "paused"
    """Its verdict stopped it: the rows it had not published are approved again."""
    FINISHED = "finished"
    """It published everything it took, and looked at the outcomes."""
    STOPPED = "stopped"
    """It ended before finishing (a task failed for good, or it died between turns)."""


class RowOutcome(StrEnum):
    """What became of one row of a run (``replay_run_rows.outcome``)."""

    QUEUED = "queued"
    """Taken by the run, not published yet."""
    PENDING = "pending"
    """Published; the live consumer has not decided on the copy yet."""
    PROCESSED = "processed"
    """The consumer stored the copy: its ``processed_orders`` row carries the replay id."""
    FAILED_AGAIN = "failed_again"
    """The copy failed again: a dead letter whose lineage names this replay."""
    RETURNED = "returned"
    """The run paused or stopped before publishing it: it is approved again."""
    SKIPPED = "skipped"
    """Not published by this run: parked, rejected, or taken by another run."""

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


PUBLISHED = (RowOutcome.PENDING, RowOutcome.PROCESSED, RowOutcome.FAILED_AGAIN)
"""Outcomes of rows the run published."""


@dataclass(frozen=True, slots=True)
class RunRow:
    """A row of a run as a page or a summary shows it: the DLQ event and its outcome."""

    event: DlqEvent
    member: ReplayRunRow

    @property
    def outcome(self) -> RowOutcome:
        return RowOutcome(self.member.outcome)


def outcome_said(member: ReplayRunRow) -> str:
    """What became of a row's replayed copy, in one line (``orderproc dlq show``, pages)."""
    said = f"{RowOutcome(member.outcome).label} (replay {member.replay_id})"
    if member.outcome == RowOutcome.FAILED_AGAIN:
        said += f": {member.note}; its next trip: {member.trip_topic} [{member.trip_partition}]"
        said += f" @ {member.trip_offset}"
    elif member.note:
        said += f": {member.note}"
    return said


def reserved_elsewhere(replay_id: str, now: datetime) -> ColumnElement[bool]:
    """A condition on ``dlq_events``: the row waits to be published by another run that
    is running and reserves it until later than ``now``."""
    return exists().where(
        ReplayRunRow.event_id == DlqEvent.id,
        ReplayRunRow.outcome == RowOutcome.QUEUED.value,
        ReplayRunRow.replay_id != replay_id,
        ReplayRun.replay_id == ReplayRunRow.replay_id,
        ReplayRun.state == RunState.RUNNING.value,
        ReplayRun.reserved_until > now,
    )


def _queued(replay_id: str) -> ColumnElement[bool]:
    return and_(ReplayRunRow.replay_id == replay_id, ReplayRunRow.outcome == RowOutcome.QUEUED)


def _whole(said: str, back: int) -> str:
    return f"{said}; {back} rows returned to approved" if back else said


class Runs:
    """The run records of the DLQ store."""

    engine: Engine

    def run(self, replay_id: str) -> ReplayRun | None:
        """The record of a run that published (or tried to), None for any other id."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ReplayRun, replay_id)

    def begin_run(
        self,
        lease: Lease,
        selection: EventFilter,
        *,
        limit: int,
        actor: str,
        request: Mapping[str, Any],
        dlq_positions: Mapping[str, int] | None = None,
    ) -> ReplayRun:
        """The lease's run, recorded with its selection frozen (up to ``limit`` rows that
        match, have nothing pending and no other run reserves), or as an earlier attempt
        of it (an Airflow retry) left it.

        Runs that are ``running`` but neither hold the lease nor reserve rows any more
        died between or inside their turns: they are marked ``stopped`` first.
        """
        now = utcnow()
        known = select(ReplayRun.replay_id).where(ReplayRun.replay_id == lease.replay_id)
        with lease.transaction() as conn:
            if conn.scalar(known) is None:
                self._stop_dead_runs(conn, lease.replay_id, now)
                picked = select(DlqEvent.id).where(
                    *selection.clauses(),
                    DlqEvent.replay_pending.is_(False),
                    ~reserved_elsewhere(lease.replay_id, now),
                )
                ids = list(conn.scalars(picked.order_by(DlqEvent.id).limit(limit)))
                conn.execute(insert(ReplayRun).values(
                    replay_id=lease.replay_id, actor=actor[:200], state=RunState.RUNNING.value,
                    request=dict(request), dlq_positions=dict(dlq_positions or {}),
                    started_at=now, updated_at=now, canary=0, steps=0,
                ))  # fmt: skip
                if ids:
                    members = [{"replay_id": lease.replay_id, "event_id": i,
                                "outcome": RowOutcome.QUEUED.value} for i in ids]  # fmt: skip
                    conn.execute(insert(ReplayRunRow), members)
        run = self.run(lease.replay_id)
        assert run is not None
        if selection.ids and run.not_taken is None:
            self.update_run(lease, not_taken=self._not_taken(selection, run))
            run = self.run(lease.replay_id)
            assert run is not None
        return run

    @staticmethod
    def _stop_dead_runs(conn: Any, replay_id: str, now: datetime) -> None:
        dead = (
            (ReplayRun.state == RunState.RUNNING.value)
            & (ReplayRun.replay_id != replay_id)
            & (ReplayRun.reserved_until.is_(None) | (ReplayRun.reserved_until <= now))
        )
        names = list(conn.scalars(select(ReplayRun.replay_id).where(dead)))
        if not names:
            return
        said = f"stopped: it ended without finishing (the replay was taken over by {replay_id})"
        conn.execute(update(ReplayRun).where(ReplayRun.replay_id.in_(names)).values(
            state=RunState.STOPPED.value, said=said, failed=True, ended_at=now, updated_at=now,
        ))  # fmt: skip
        stmt = update(ReplayRunRow).where(
            ReplayRunRow.replay_id.in_(names), ReplayRunRow.outcome == RowOutcome.QUEUED
        )
        conn.execute(stmt.values(outcome=RowOutcome.SKIPPED.value, decided_at=now,
                                 note="its run ended before publishing it"))  # fmt: skip

    def _not_taken(self, selection: EventFilter, run: ReplayRun) -> dict[str, str]:
        """For a selection by id: the ids the run did not take, and why."""
        with self.engine.connect() as conn:
            taken = set(conn.scalars(select(ReplayRunRow.event_id).where(
                ReplayRunRow.replay_id == run.replay_id)))  # fmt: skip
        missing = sorted(set(selection.ids) - taken)
        if not missing:
            return {}
        with Session(self.engine, expire_on_commit=False) as session:
            events = {e.id: e for e in session.scalars(select(DlqEvent).where(
                DlqEvent.id.in_(missing)))}  # fmt: skip
        why = {i: why_not_taken(events.get(i), selection) for i in missing}
        for i in missing:
            holder = self._reserved_by(i)
            if holder is not None and events.get(i) is not None:
                why[i] = f"reserved by run {holder}, which has not published it yet"
        return {str(i): text for i, text in why.items()}

    def _reserved_by(self, event_id: int) -> str | None:
        stmt = select(ReplayRunRow.replay_id).where(
            ReplayRunRow.event_id == event_id,
            ReplayRunRow.outcome == RowOutcome.QUEUED,
            ReplayRun.replay_id == ReplayRunRow.replay_id,
            ReplayRun.state == RunState.RUNNING.value,
            ReplayRun.reserved_until > utcnow(),
        )
        with self.engine.connect() as conn:
            return conn.scalar(stmt.limit(1))

    def update_run(self, lease: Lease, **values: Any) -> None:
        """Change the lease's run record (``canary``, ``steps``, ``waiting_since``, ...)."""
        stmt = update(ReplayRun).where(ReplayRun.replay_id == lease.replay_id)
        with lease.transaction() as conn:
            conn.execute(stmt.values(updated_at=utcnow(), **values))

    def queued(self, replay_id: str) -> int:
        """Rows the run took and has not published (nor given up) yet."""
        return len(self._ids(_queued(replay_id)))

    def _ids(self, where: ColumnElement[bool]) -> list[int]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(ReplayRunRow.event_id).where(where)))

    def end_run(self, lease: Lease, state: RunState, *, said: str, failed: bool, actor: str) -> int:
        """End the lease's run in ``state`` with its verdict ``said``; its queued rows go
        back (``give_back``). Returns how many rows went back to approved."""
        now = utcnow()
        with lease.transaction() as conn:
            back = self._give_back(conn, lease, said, actor, now, tell=lambda n: _whole(said, n))
            conn.execute(update(ReplayRun).where(ReplayRun.replay_id == lease.replay_id).values(
                state=state.value, said=_whole(said, back), failed=failed, ended_at=now,
                updated_at=now, reserved_until=None, waiting_since=None,
            ))  # fmt: skip
        return back

    def give_back(self, lease: Lease, why: str, *, actor: str) -> int:
        """Give back the run's queued rows (the run goes on without them): the approved
        ones are ``returned`` (an audit row each, saying ``why``), the others (parked,
        rejected, replayed by another run since) ``skipped`` with the reason. Returns how
        many went back to approved."""
        with lease.transaction() as conn:
            return self._give_back(conn, lease, why, actor, utcnow(), tell=lambda _n: why)

    def _give_back(
        self, conn: Any, lease: Lease, why: str, actor: str, now: datetime,
        tell: Callable[[int], str],
    ) -> int:  # fmt: skip
        queued = list(conn.scalars(select(ReplayRunRow.event_id).where(_queued(lease.replay_id))))
        events = {e.id: e for e in conn.execute(select(DlqEvent).where(
            DlqEvent.id.in_(queued))).all()} if queued else {}  # fmt: skip
        back = [i for i in queued if events[i].status == DlqStatus.APPROVED]
        mine = update(ReplayRunRow).where(_queued(lease.replay_id))
        if back:  # only the rows still queued now: a look may have decided one meanwhile
            back = sorted(conn.scalars(mine.where(ReplayRunRow.event_id.in_(back)).values(
                outcome=RowOutcome.RETURNED.value, note=why, decided_at=now,
            ).returning(ReplayRunRow.event_id)))  # fmt: skip
        if back:
            audit(conn, back, AuditAction.RETURNED, actor, at=now,
                  note=f"replay {lease.replay_id} {tell(len(back))}")  # fmt: skip
        approved = EventFilter(status=DlqStatus.APPROVED.value)
        for i in (i for i in queued if i not in back):
            conn.execute(mine.where(ReplayRunRow.event_id == i).values(
                outcome=RowOutcome.SKIPPED.value, note=why_not_taken(events[i], approved),
                decided_at=now))  # fmt: skip
        return len(back)

    def run_rows(self, replay_id: str) -> list[RunRow]:
        """Every row of a run with its DLQ event, by event id."""
        stmt = (
            select(DlqEvent, ReplayRunRow)
            .join(ReplayRunRow, ReplayRunRow.event_id == DlqEvent.id)
            .where(ReplayRunRow.replay_id == replay_id)
            .order_by(DlqEvent.id)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return [RunRow(e, m) for e, m in session.execute(stmt)]

    def outcome_of(self, event: DlqEvent) -> ReplayRunRow | None:
        """What the run that replayed ``event`` knows of its copy (None: not replayed by a
        recorded run)."""
        if event.replay_id is None:
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ReplayRunRow, (event.replay_id, event.id))
