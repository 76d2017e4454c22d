"""The review page's run page apart from its HTML: what a replay run did and what became of
its rows, its verdict in words, the failures with where their next trip is, and the run
that "resume" or "replay without canary" triggers.

The run's record comes from the DLQ store (``orderproc.dlq.runs``), found by the Airflow
run id as the DAG's tasks find it; the Airflow run's own state from Airflow's REST API
(as the user, in ``review_app``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, tuple_

from orderproc.dlq.filters import EventFilter
from orderproc.dlq.outcomes import look
from orderproc.dlq.replay import replay_id_for
from orderproc.dlq.runs import RowOutcome, RunRow, RunState
from orderproc.dlq.store import DlqStore
from orderproc.dlq.summary import RunReport, run_report
from orderproc.errors import ReviewError
from orderproc.models import DlqStatus
from orderproc.store.tables import DlqCopy, DlqEvent

ENDED = (RunState.PAUSED, RunState.STOPPED)
"""A run in these states gave rows back: the page offers to replay them."""


@dataclass(frozen=True, slots=True)
class RunPage:
    """What the run page shows of one replay run, beside Airflow's state of it."""

    report: RunReport | None
    rows: list[DlqEvent]
    """The run's rows (or, for a run that published nothing, the rows its conf asked for)."""
    outcomes: dict[int, RunRow] = field(default_factory=dict)
    trips: dict[int, int] = field(default_factory=dict)
    """A row whose copy failed again -> the review row of that dead letter, once drained."""
    returned: list[int] = field(default_factory=list)
    """Rows the run gave back that are still approved: what "resume" replays."""

    @property
    def counts(self) -> list[tuple[RowOutcome, int]]:
        if self.report is None:
            return []
        return [(o, self.report.tally[o]) for o in RowOutcome if self.report.tally[o]]

    @property
    def top_reason(self) -> str | None:
        """The reason most copies failed again with (the backlog's filter for them)."""
        if self.report is None or not self.report.tally.reasons:
            return None
        return next(iter(self.report.tally.reasons))


def run_page(store: DlqStore, run_id: str, conf: dict[str, Any], *, limit: int) -> RunPage:
    """The run page's content for Airflow run ``run_id`` (its ``conf`` as Airflow has it).

    The page looks at the store's part of the outcomes first (copies processed since the
    run's last look), as ``orderproc dlq show`` does; failures are found by the run itself.
    """
    replay_id = replay_id_for(run_id)
    if store.run(replay_id) is not None:
        look(store, replay_id, reader=None, dlq_topic=None)
    report = run_report(store, replay_id)
    if report is None:
        asked = conf.get("event_ids")
        # The conf is whatever the run was triggered with: keep only what can be an event id.
        ids = tuple(i for i in asked if type(i) is int)[:limit] if isinstance(asked, list) else ()
        rows = store.list_events(EventFilter(ids=ids), limit=len(ids)) if ids else []
        return RunPage(None, rows)
    shown = report.rows[:limit]
    returned = [
        r.event.id
        for r in report.rows
        if r.outcome is RowOutcome.RETURNED and r.event.status == DlqStatus.APPROVED
    ]
    return RunPage(
        report,
        [r.event for r in shown],
        {r.event.id: r for r in shown},
        _trips(store, report.failures),
        returned if report.run.state in ENDED else [],
    )


def _trips(store: DlqStore, failures: list[RunRow]) -> dict[int, int]:
    """The review rows of the dead letters the failures' copies became (once drained)."""
    where = {
        (r.member.trip_topic, r.member.trip_partition, r.member.trip_offset): r.event.id
        for r in failures
        if r.member.trip_topic is not None
    }
    if not where:
        return {}
    coords = tuple_(DlqCopy.dlq_topic, DlqCopy.dlq_partition, DlqCopy.dlq_offset)
    stmt = select(DlqCopy.dlq_topic, DlqCopy.dlq_partition, DlqCopy.dlq_offset, DlqCopy.event_id)
    with store.engine.connect() as conn:
        found = conn.execute(stmt.where(coords.in_(list(where)))).all()
    return {where[(t, p, o)]: int(event) for t, p, o, event in found}


def resume_conf(store: DlqStore, run_id: str, *, canary: bool) -> dict[str, Any]:
    """The ``orders_dlq_replay`` conf of a new run of what a paused run gave back: its
    selection's returned rows that are still approved, with the options it was asked
    with (without a canary when ``canary`` is False)."""
    replay_id = replay_id_for(run_id)
    run = store.run(replay_id)
    if run is None or run.state not in ENDED:
        raise ReviewError(f"replay {replay_id} did not pause or stop: nothing to resume")
    ids = run_page(store, run_id, {}, limit=0).returned  # counted over every row, none shown
    if not ids:
        raise ReviewError(f"replay {replay_id} gave back no row that is still approved")
    conf = {**run.request, "event_ids": ids, "max_messages": len(ids), "dry_run": False}
    conf["status"] = DlqStatus.APPROVED.value
    if not canary:
        conf["canary"] = "0"
    return conf
