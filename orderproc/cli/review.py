"""``orderproc dlq list|show|approve|reject|edit``: review dead-lettered orders without a browser.

Every action writes an audit row naming the actor (default ``cli:<os user>``).
Expected failures (unknown id, wrong status, invalid correction) raise
``ReviewError`` and reach the user as one line.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError
from tabulate import tabulate

from orderproc.cli.common import echo, settings_with
from orderproc.clock import as_utc
from orderproc.dlq.corrections import coerce_field
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.store import DlqStore
from orderproc.errors import ReviewError
from orderproc.models import DlqStatus
from orderproc.serde import OrderSchema, serde_for
from orderproc.store.engine import open_engine, store_error
from orderproc.store.tables import AuditLog, DlqEvent

STATUSES = [s.value for s in DlqStatus]

ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is acting (default: cli:<os user>).")
]
NoteOption = Annotated[str | None, typer.Option("--note", help="Why; kept in the audit trail.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
IfVersion = Annotated[
    int | None,
    typer.Option(
        "--if-version",
        min=0,
        help="Act only if the event is still at this version (`show` prints it); "
        "refused, naming the change, if someone changed it since. One event id only.",
    ),
]


def default_actor() -> str:
    """``cli:<os user>``, the actor recorded when ``--actor`` is not given."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli:unknown"


@contextmanager
def open_store() -> Iterator[DlqStore]:
    try:
        with open_engine(settings_with().effective_database_url) as engine:
            yield DlqStore(engine)
    except SQLAlchemyError as exc:
        raise store_error("the DLQ store failed", exc) from exc


def register(app: typer.Typer) -> None:
    """Add the review commands to ``orderproc dlq``."""
    app.command("list")(list_events)
    app.command("show")(show_event)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("edit")(edit)


def list_events(
    status: Annotated[str | None, typer.Option(help=f"One of: {', '.join(STATUSES)}.")] = None,
    order_id: Annotated[list[str] | None, typer.Option("--order-id", help="Repeatable.")] = None,
    reason: Annotated[list[str] | None, typer.Option("--reason", help="Repeatable.")] = None,
    category: Annotated[list[str] | None, typer.Option("--category", help="Repeatable.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Dead-lettered at or after.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Dead-lettered before.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    json_output: JsonOption = False,
) -> None:
    """List DLQ events, oldest first."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"unknown status {status!r} (one of: {', '.join(STATUSES)})")
    flt = EventFilter(
        status=status,
        order_ids=tuple(order_id or ()),
        reasons=tuple(reason or ()),
        categories=tuple(category or ()),
        since=as_utc(since) if since else None,
        until=as_utc(until) if until else None,
    )
    with open_store() as store:
        events = store.list_events(flt, limit=limit)
    if json_output:
        echo(json.dumps([summary(e) for e in events], default=str))
        return
    echo(format_table(events))


def show_event(
    event_id: Annotated[int, typer.Argument(help="Event id (see `list`).")],
    json_output: JsonOption = False,
) -> None:
    """Show one DLQ event with its envelope, what became of its replayed copy, and its
    audit trail."""
    from orderproc.dlq.outcomes import look
    from orderproc.dlq.runs import outcome_said

    with open_store() as store:
        event = store.get(event_id)
        trail = store.audit_trail(event_id)
        if event.replay_id is not None:  # the store's part of a look: processed copies
            look(store, event.replay_id, reader=None, dlq_topic=None)
        member = store.outcome_of(event)
    detail = details(event, trail)
    detail["replay_outcome"] = outcome_said(member) if member is not None else None
    if json_output:
        echo(json.dumps(detail, default=str))
        return
    for key, value in detail.items():
        if key in ("envelope", "audit", "replay_outcome"):
            continue
        echo(f"{key:>18}: {'' if value is None else value}")
    echo(f"    replay outcome: {detail['replay_outcome'] or ''}")
    echo("          envelope: " + json.dumps(detail["envelope"], indent=2, default=str))
    echo("             audit:")
    for entry in detail["audit"]:
        note = f" ({entry['note']})" if entry["note"] else ""
        echo(f"  {entry['at']}  {entry['action']:<9} {entry['actor']}{note}")


def approve(
    event_ids: Annotated[list[int], typer.Argument(help="Event ids.")],
    note: NoteOption = None,
    actor: ActorOption = None,
    if_version: IfVersion = None,
) -> None:
    """Approve new events for replay (all or none)."""
    seen = _seen(event_ids, if_version)
    with open_store() as store:
        store.approve(event_ids, actor=actor or default_actor(), note=note, seen=seen)
    echo(f"approved {len(set(event_ids))} event(s): {_ids(event_ids)}")


def reject(
    event_ids: Annotated[list[int], typer.Argument(help="Event ids.")],
    note: NoteOption = None,
    actor: ActorOption = None,
    if_version: IfVersion = None,
) -> None:
    """Reject new events: they will never be replayed (all or none)."""
    seen = _seen(event_ids, if_version)
    with open_store() as store:
        store.reject(event_ids, actor=actor or default_actor(), note=note, seen=seen)
    echo(f"rejected {len(set(event_ids))} event(s): {_ids(event_ids)}")


def _seen(event_ids: list[int], version: int | None) -> dict[int, int] | None:
    if version is None:
        return None
    if len(set(event_ids)) != 1:
        raise ReviewError("--if-version goes with one event id (each event has its own version)")
    return {event_ids[0]: version}


def edit(
    event_id: Annotated[int, typer.Argument(help="Event id.")],
    assignments: Annotated[
        list[str], typer.Option("--set", help="field=value, e.g. price=42.5 (repeatable).")
    ],
    note: NoteOption = None,
    actor: ActorOption = None,
    if_version: IfVersion = None,
) -> None:
    """Correct the order a replay will publish; validated against the schema it will be
    written with (with a registry: the subject's latest version, whose fields you may set).

    The correction applies to the order as it is now (or at ``--if-version``) and is
    saved only if nobody changed the event in between."""
    schema = serde_for(settings_with(), latest=True).writer_schema()
    changes = parse_assignments(assignments, schema)
    with open_store() as store:
        corrected = store.edit(event_id, changes, actor=actor or default_actor(), note=note,
                               seen=if_version, schema=schema)  # fmt: skip
    echo(f"event {event_id} will be replayed as {json.dumps(corrected)}")


def parse_assignments(assignments: list[str], schema: OrderSchema | None = None) -> dict[str, Any]:
    """``["price=42.5"]`` -> ``{"price": 42.5}``, typed by ``schema`` (default: the local one)."""
    changes: dict[str, Any] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ReviewError(f"--set expects field=value, got {item!r}")
        changes[name.strip()] = coerce_field(name.strip(), value, schema)
    return changes


def summary(event: DlqEvent) -> dict[str, Any]:
    """The fields ``list`` shows."""
    return {
        "id": event.id,
        "status": event.status,
        "order_id": event.order_id,
        "product": event.product,
        "price": event.price,
        "corrected_price": (event.corrected_payload or {}).get("price"),
        "category": event.category,
        "reason": event.reason,
        "replay_count": event.replay_count,
        "version": event.version,
        "dead_lettered_at": event.dead_lettered_at or event.drained_at,
    }


def details(event: DlqEvent, trail: list[AuditLog]) -> dict[str, Any]:
    """Everything ``show`` prints."""
    skip = {"raw_value", "envelope"}
    values = {c.key: getattr(event, c.key) for c in DlqEvent.__table__.columns if c.key not in skip}
    values["raw_value_bytes"] = len(event.raw_value or b"")
    values["envelope"] = event.envelope
    values["audit"] = [
        {"at": a.at, "action": a.action, "actor": a.actor, "note": a.note, "details": a.details}
        for a in trail
    ]
    return values


def format_table(events: list[DlqEvent]) -> str:
    """A fixed-width table, one event a line."""
    rows = []
    for e in events:
        fixed = (e.corrected_payload or {}).get("price")
        rows.append(
            (
                e.id,
                e.status,
                e.order_id or "-",
                e.product or "-",
                "-" if e.price is None else f"{e.price:.2f}",
                "-" if fixed is None else f"{fixed:.2f}",
                e.category,
                e.replay_count,
                e.reason[:60],
            )
        )
    header = ("ID", "STATUS", "ORDER", "PRODUCT", "PRICE", "FIX", "CATEGORY", "REPLAYS", "REASON")
    table = tabulate(rows, headers=header, tablefmt="plain", disable_numparse=True)
    return f"{table}\n({len(events)} event(s))"


def _ids(event_ids: list[int]) -> str:
    return ", ".join(str(i) for i in sorted(set(event_ids)))
