"""A replay run in words and a table (``ReplayResult.to_dict()``), for the task log and
the command line: what it did, what it waited for, and what it left to whom."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from orderproc.dlq.plan import PlanAction


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
    for eid, why in sorted((int(k), v) for k, v in result.get("not_taken", {}).items()):
        rows.append([eid, "-", "not taken", "-", "-", why])
    if not rows:
        rows.append(["-", "-", "nothing selected", "-", "-", "-"])
    table = tabulate(
        rows,
        headers=["event", "order", "action", "replays", "price", "outcome"],
        tablefmt="github",
        disable_numparse=True,
    )
    return "\n".join([*said(result), "", table])


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
