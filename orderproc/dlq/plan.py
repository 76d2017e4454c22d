"""What a replay does with each row it took, decided without I/O: publish the order (the
reviewer's correction if any) with lineage headers, park it at the replay cap, or reject it
when it no longer encodes; and why a row asked for by id was not taken."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orderproc import headers as h
from orderproc.dlq.corrections import payload_of, validated_order
from orderproc.dlq.filters import EventFilter
from orderproc.errors import ReviewError
from orderproc.headers import Header
from orderproc.models import DlqStatus
from orderproc.serde import OrderSchema
from orderproc.store.tables import DlqEvent


class PlanAction(StrEnum):
    """What a run does with a selected row (the preview page shows the same words)."""

    PUBLISH = "publish"
    PARK = "park"
    REJECT = "reject"


PUBLISH, PARK, REJECT = PlanAction.PUBLISH, PlanAction.PARK, PlanAction.REJECT


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """What a run does (or a dry run would do) with one DLQ event."""

    event_id: int
    order_id: str | None
    action: PlanAction
    replay_count: int
    payload: dict[str, Any] | None = None
    note: str | None = None


def plan_rows(
    events: Sequence[DlqEvent], *, max_replays: int, schema: OrderSchema | None = None
) -> list[PlannedRow]:
    """Decide per event: park (cap reached), reject (not an order of ``schema``) or publish."""
    return [_plan_one(e, max_replays, schema) for e in events]


def _plan_one(event: DlqEvent, max_replays: int, schema: OrderSchema | None) -> PlannedRow:
    def planned(action: PlanAction, **extra: Any) -> PlannedRow:
        return PlannedRow(event.id, event.order_id, action, event.replay_count, **extra)

    if event.replay_count >= max_replays:
        return planned(PARK, note=f"replay cap reached ({event.replay_count} of {max_replays})")
    try:
        payload = validated_order(payload_of(event) or {}, context=f"event {event.id}",
                                  schema=schema)  # fmt: skip
    except ReviewError as exc:
        return planned(REJECT, note=f"not replayable: {exc}")
    return planned(PUBLISH, payload=payload)


def lineage_headers(event: DlqEvent, replay_id: str) -> list[Header]:
    """Headers that tie the replayed copy to its DLQ record and count the replays."""
    pairs = {
        h.REPLAY_ID: replay_id,
        h.REPLAY_COUNT: str(event.replay_count + 1),
        h.REPLAY_DLQ_TOPIC: event.dlq_topic,
        h.REPLAY_DLQ_PARTITION: str(event.dlq_partition),
        h.REPLAY_DLQ_OFFSET: str(event.dlq_offset),
    }
    return [(k, v.encode()) for k, v in pairs.items()]


def why_not_taken(event: DlqEvent | None, selection: EventFilter) -> str:
    """Why a row a selection named by id was not taken, in words that say whose it is."""
    if event is None:
        return "no such DLQ event"
    if event.status == DlqStatus.REPLAYED:
        return (
            f"already replayed by {event.replay_id} "
            f"(partition {event.replay_partition} offset {event.replay_offset})"
        )
    if event.replay_pending:
        return f"in a transaction of {event.replay_id} whose outcome the next run settles"
    if selection.status and event.status != selection.status:
        return f"it is {event.status}, not {selection.status}"
    return "left for a later run (max_messages reached, or it no longer matches)"
