"""A replay run in words and a table, for the task log and the command line: what a turn
did (``ReplayResult.to_dict()``: a dry run, or one turn), what it waited for and what it
left to whom; and a run as the store knows it (``RunReport``): its verdict, each row's
outcome, why its copies failed again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from orderproc.dlq.corrections import payload_of
from orderproc.dlq.outcomes import Tally, reasons_said
from orderproc.dlq.plan import PlanAction
from orderproc.dlq.runs import PUBLISHED, RowOutcome, RunRow
from orderproc.dlq.store import DlqStore
from orderproc.store.tables import ReplayRun


def summary_markdown(result: Mapping[str, Any]) -> str:
    """What the run did (first lines), then a Markdown table of its rows."""
    delivered = {int(d["event_id"]): d for d in result.get("published", [])}
    failed = {int(k): v for k, v in result.get("failed", {}).items()}
    dry = bool(result.get("dry_run"))
    rows = []
    for row in result.get("planned", []):
        eid = int(row["event_id"])
        price = (row.get("payload") or {}).get("price")
        shown = "-" if price is None else f"{price:.2f}"
        outcome = _outcome(row, delivered.get(eid), failed.get(eid), dry)
        rows.append(
            [eid, row.get("order_id") or "-", row["action"], row["replay_count"], shown, outcome]
        )
    headers = ["event", "order", "action", "replays", "price", "outcome"]
    return "\n".join([*said(result), "", _table(rows, headers, result.get("not_taken"))])


def _table(rows: list[list[Any]], headers: list[str], not_taken: Mapping[str, str] | None) -> str:
    """The rows, then those asked for by id and not taken (and why), as Markdown."""
    for eid, why in sorted((int(k), v) for k, v in (not_taken or {}).items()):
        rows.append([eid, "-", "not taken", *["-"] * (len(headers) - 4), why])
    if not rows:
        rows.append(["-", "-", "nothing selected", *["-"] * (len(headers) - 3)])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def said(result: Mapping[str, Any]) -> list[str]:
    """The run in sentences: where it published, whom it waited for, what it settled."""
    mode = "dry run" if result.get("dry_run") else "replay"
    schema = f" with {result['schema']}" if result.get("schema") else ""
    lines = [f"{mode} {result.get('replay_id')} -> {result.get('topic')}{schema}"]
    if result.get("waited_for"):
        lines.append(f"waited for {result['waited_for']} to finish before starting")
    committed, aborted = [*(result.get("recovered") or ()), 0, 0][:2]
    if committed or aborted:
        lines.append(
            f"settled what an ended run left pending: {committed} committed (marked replayed), "
            f"{aborted} aborted (replayable again)"
        )
    published, asked = len(result.get("published", [])), len(result.get("planned", []))
    lines.append(f"took {asked} row(s), published {published}")
    if result.get("not_taken"):
        lines.append(f"did not take {len(result['not_taken'])} row(s) it was asked for (below)")
    return lines


def _outcome(
    row: Mapping[str, Any], delivered: Mapping[str, Any] | None, failed: str | None, dry: bool
) -> str:
    if row["action"] != PlanAction.PUBLISH:
        return str(row.get("note") or "")
    if dry:
        return "would publish"
    if delivered is not None:
        return f"partition {delivered['partition']} offset {delivered['offset']}"
    return f"FAILED: {failed}" if failed else "not published"


# -- a run with a record: what became of each row ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RunReport:
    """A publishing run as the store knows it: its record, its rows, their tally."""

    run: ReplayRun
    rows: list[RunRow]
    tally: Tally

    @property
    def failures(self) -> list[RunRow]:
        """The rows whose copy failed again."""
        return [r for r in self.rows if r.outcome is RowOutcome.FAILED_AGAIN]


def run_report(store: DlqStore, replay_id: str) -> RunReport | None:
    """The run's report as stored (None: no publishing run of that id)."""
    run = store.run(replay_id)
    if run is None:
        return None
    return RunReport(run, store.run_rows(replay_id), store.tally(replay_id))


def run_said(report: RunReport) -> list[str]:
    """The run in sentences: where it stands, its verdict, its rows by outcome."""
    run, tally = report.run, report.tally
    lines = [f"replay {run.replay_id}: {run.state}"]
    if run.said:
        lines.append(run.said)
    if run.canary:
        lines.append(f"canary: {run.canary} row(s), then {run.steps} step(s)")
    counts = ", ".join(f"{tally[o]} {o.label}" for o in RowOutcome if tally[o])
    lines.append(f"{len(report.rows)} row(s): {counts or 'none'}")
    if tally.reasons:
        lines.append(f"failed again with {reasons_said(tally.reasons)}")
    return lines


def run_markdown(report: RunReport, notes: Sequence[str] = ()) -> str:
    """The run's sentences (and ``notes``: what its turns did, waited for, settled), then
    a Markdown table of its rows and their outcomes."""
    rows = []
    for r in report.rows:
        e = r.event
        price = (payload_of(e) or {}).get("price")
        shown = "-" if price is None else f"{price:.2f}"
        copy = "-"
        if r.outcome in PUBLISHED and e.replay_offset is not None:
            copy = f"partition {e.replay_partition} offset {e.replay_offset}"
        rows.append([e.id, e.order_id or "-", r.outcome.label, shown, copy, r.member.note or ""])
    headers = ["event", "order", "outcome", "price", "replayed copy", "note"]
    table = _table(rows, headers, report.run.not_taken)
    return "\n".join([*run_said(report), *notes, "", table])
