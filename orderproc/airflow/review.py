"""The DLQ review page's logic apart from its HTML: forms validated once, what a detail
page shows, the replay preview and the run it triggers, and the page's CSRF tokens.

The page's routes (``review_app``) parse a request with these, call the DLQ store and
render the result; they decide nothing themselves. Every value a user sends is
validated here (one-line ``ConfigError``/``ReviewError`` when it is wrong) and reaches
SQL only as a bound parameter through ``EventFilter``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, field_validator

from orderproc.airflow.params import Moment, Params, in_utc
from orderproc.dlq.backlog import PAGE_SIZES, SORTS, Sort
from orderproc.dlq.corrections import coerce_field
from orderproc.dlq.envelope import MAX_REASON
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.plan import PlanAction, PlannedRow, lineage_headers
from orderproc.dlq.replay import ReplayRequest, run_replay
from orderproc.dlq.store import DlqStore
from orderproc.errors import ConfigError, ErrorCategory, ReviewError
from orderproc.models import MAX_TEXT, DlqStatus
from orderproc.serde import OrderSchema, OrderSerde, local_schema
from orderproc.store.tables import AuditLog, DlqCopy, DlqEvent, ReplayRunRow

REPLAY_DAG_ID = "orders_dlq_replay"
BULK_LIMIT = 500
"""A bulk action takes at most this many rows (the oldest first)."""
RAW_SHOWN = 4096
"""A detail page shows at most this many raw bytes (hex and base64)."""
NOTE_LIMIT = 2000
CSRF_MAX_AGE_S = 8 * 3600
PREVIEW_WAIT_S = 5.0
"""A preview waits this long for a schema registry that does not answer, then says so."""
CLOCK_SKEW_S = 60
"""A token from another API server whose clock is this far ahead is still fresh."""

STATUSES = tuple(s.value for s in DlqStatus)
CATEGORIES = tuple(c.value for c in ErrorCategory)


# -- the backlog's filters -----------------------------------------------------------------


class BacklogQuery(Params):
    """The backlog page's query string: filters, sort and page (empty fields: any)."""

    status: str = ""
    order_id: str = Field(default="", max_length=MAX_TEXT)
    product: str = Field(default="", max_length=MAX_TEXT)
    reason: str = Field(default="", max_length=MAX_REASON)
    category: str = ""
    since: Moment = None
    until: Moment = None
    sort: str = "failed_at"
    dir: str = "asc"
    page: int = Field(default=1, ge=1, le=1_000_000)
    size: int = 50

    @field_validator("order_id", "product", "reason", "status", "category", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("status")
    @classmethod
    def _a_status(cls, value: str) -> str:
        return _one_of(value, STATUSES)

    @field_validator("category")
    @classmethod
    def _a_category(cls, value: str) -> str:
        return _one_of(value, CATEGORIES)

    @field_validator("sort")
    @classmethod
    def _a_column(cls, value: str) -> str:
        if value not in SORTS:
            raise ValueError(f"must be one of {', '.join(SORTS)}")
        return value

    @field_validator("dir")
    @classmethod
    def _a_direction(cls, value: str) -> str:
        return _one_of(value, ("asc", "desc")) or "asc"

    @field_validator("size")
    @classmethod
    def _a_size(cls, value: int) -> int:
        if value not in PAGE_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, PAGE_SIZES))}")
        return value

    @field_validator("since", "until")
    @classmethod
    def _in_utc(cls, value: Any) -> Any:
        return in_utc(value)

    def event_filter(self) -> EventFilter:
        """The rows these filters select."""
        return EventFilter(
            status=self.status or None,
            order_ids=_one(self.order_id),
            products=_one(self.product),
            reasons=_one(self.reason),
            categories=_one(self.category),
            since=self.since,
            until=self.until,
        )

    def order(self) -> Sort:
        return Sort(self.sort, descending=self.dir == "desc")

    def link(self, **changes: Any) -> str:
        """This query with ``changes`` as a query string (defaults left out), for links."""
        values = {**self.model_dump(), **changes}
        defaults = BacklogQuery().model_dump()
        pairs = {k: _text(v) for k, v in values.items() if v != defaults[k] and v is not None}
        return urlencode(pairs)

    def filters(self) -> dict[str, str]:
        """The filter fields alone (no sort or page), as text: a form's hidden inputs."""
        keep = ("status", "order_id", "product", "reason", "category", "since", "until")
        return {k: _text(getattr(self, k)) for k in keep if getattr(self, k)}


def _one_of(value: str, allowed: Sequence[str]) -> str:
    if value and value not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)} (or empty)")
    return value


def _one(value: str) -> tuple[str, ...]:
    return (value,) if value else ()


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


# -- actions ---------------------------------------------------------------------------


def note_of(text: str | None, *, required: bool = False) -> str | None:
    """A reviewer's note, trimmed; ``ReviewError`` when it is required and missing."""
    note = (text or "").strip()
    if len(note) > NOTE_LIMIT:
        raise ReviewError(f"the note is {len(note)} characters long; at most {NOTE_LIMIT}")
    if required and not note:
        raise ReviewError("a note is required: say why")
    return note or None


def edit_changes(
    form: Mapping[str, str], current: Mapping[str, Any] | None, schema: OrderSchema | None = None
) -> dict[str, Any]:
    """The fields of an edit form that differ from ``current``, typed by ``schema`` (the one
    the replay writes with: with the registry, the subject's latest; default the local one).

    Only fields of the schema are read; an empty form field leaves its field as it is
    (an order field can never be empty). ``ReviewError`` names a value of the wrong type,
    or says that nothing would change.
    """
    schema = schema or local_schema()
    changes: dict[str, Any] = {}
    for name in (f["name"] for f in schema.fields):
        text = (form.get(name) or "").strip()
        if not text:
            continue
        value = coerce_field(name, text, schema)
        if current is None or current.get(name) != value:
            changes[name] = value
    if not changes:
        raise ReviewError("nothing to change: the form holds the values the order already has")
    return changes


def bulk_ids(store: DlqStore, query: BacklogQuery, chosen: Sequence[int]) -> list[int]:
    """The ``new`` rows a bulk action takes: the chosen ones, else every ``new`` row the
    filters select (at most ``BULK_LIMIT``)."""
    if chosen:
        if len(set(chosen)) > BULK_LIMIT:
            raise ReviewError(f"select at most {BULK_LIMIT} rows at a time")
        return sorted(set(chosen))
    if query.status not in ("", DlqStatus.NEW.value):
        raise ReviewError(
            f"only new rows can be approved or rejected; these filters select {query.status} rows"
        )
    flt = query.event_filter().with_status(DlqStatus.NEW.value)
    ids = store.matching_ids(flt, limit=BULK_LIMIT)
    if not ids:
        raise ReviewError("no new rows match these filters: nothing to approve or reject")
    return ids


def event_id_of(value: Any) -> int:
    """An event id a form sent (a positive integer of at most 18 ASCII digits)."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) < 1:
        raise ConfigError(f"not an event id: {text[:40]!r}")
    return int(text)


def version_of(value: Any) -> int:
    """A row version a form sent (what the reviewer's view showed)."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise ConfigError(f"not a row version: {text[:40]!r}")
    return int(text)


def ticked(value: Any) -> tuple[int, int | None]:
    """A ticked row: ``<event id>@<version the page showed>`` (or just the id)."""
    event_id, at, version = str(value).partition("@")
    return event_id_of(event_id), version_of(version) if at else None


# -- what a detail page shows ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawBytes:
    """Bytes that did not decode, shown as hex and base64 (the first ``RAW_SHOWN``)."""

    what: str
    length: int
    hex: str
    base64: str

    @property
    def cut(self) -> bool:
        return self.length > RAW_SHOWN


@dataclass(frozen=True, slots=True)
class EventDetail:
    """Everything the detail page shows about one failure."""

    event: DlqEvent
    original: dict[str, Any] | None
    correction: dict[str, Any] | None
    raw: RawBytes | None
    envelope: str
    copies: list[DlqCopy]
    trail: list[AuditLog]
    related: list[DlqEvent]
    outcome: ReplayRunRow | None = None
    """What became of its replayed copy, as its run knows it."""


def event_detail(store: DlqStore, event_id: int) -> EventDetail:
    """One row with its copies, audit trail and the other rows of its order."""
    event = store.get(event_id)
    original = None
    if event.order_id is not None and event.product is not None and event.price is not None:
        original = {"orderId": event.order_id, "product": event.product, "price": event.price}
    return EventDetail(
        event=event,
        original=original,
        correction=dict(event.corrected_payload) if event.corrected_payload else None,
        raw=raw_bytes(event),
        envelope=json.dumps(event.envelope, indent=2, sort_keys=True) if event.envelope else "",
        copies=store.copies_of(event_id),
        trail=store.audit_trail(event_id),
        related=store.same_order(event),
        outcome=store.outcome_of(event),
    )


def raw_bytes(event: DlqEvent) -> RawBytes | None:
    """The bytes that did not decode: the order's (kept base64 in the envelope), or the
    whole DLQ record's value when it was not our envelope at all."""
    envelope = event.envelope or {}
    if isinstance(envelope.get("raw_value_b64"), str):
        try:
            data = base64.b64decode(envelope["raw_value_b64"], validate=True)
        except ValueError:
            data = envelope["raw_value_b64"].encode()
        return _raw("the order's value as it was read from the topic", data)
    if not envelope and event.raw_value is not None:
        return _raw("the DLQ record's value (not an orderproc envelope)", event.raw_value)
    return None


def _raw(what: str, data: bytes) -> RawBytes:
    shown = data[:RAW_SHOWN]
    return RawBytes(what, len(data), shown.hex(" "), base64.b64encode(shown).decode("ascii"))


# -- the replay: preview, then a run of exactly that -----------------------------------------


@dataclass(frozen=True, slots=True)
class PreviewRow:
    """One row of a replay preview: what the dry run plans, with the record's key and
    lineage headers when it would be published."""

    plan: PlannedRow
    key: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)


def preview(
    store: DlqStore, query: BacklogQuery, *, topic: str, limit: int, serde: OrderSerde | None = None
) -> tuple[list[PreviewRow], str]:
    """The replay's own dry run over the ``approved`` rows the filters select, and the
    schema it would write them with (``id 7 (orders-value v3)``)."""
    selection = query.event_filter().with_status(DlqStatus.APPROVED.value)
    request = ReplayRequest(selection=selection, max_messages=limit, dry_run=True)
    result = run_replay(store, request, topic=topic, producer=_no_client, reader=_no_client,
                        serde=serde, timeout_s=PREVIEW_WAIT_S)  # fmt: skip
    ids = tuple(p.event_id for p in result.planned)
    events = {e.id: e for e in store.list_events(EventFilter(ids=ids), limit=limit)} if ids else {}
    rows = []
    for plan in result.planned:
        event = events[plan.event_id]
        headers = []
        if plan.action == PlanAction.PUBLISH:
            lineage = lineage_headers(event, "(this run's id)")
            headers = [(name, value.decode()) for name, value in lineage]
        rows.append(PreviewRow(plan, event.message_key or event.order_id, headers))
    return rows, result.schema


def _no_client() -> Any:
    raise AssertionError("a dry run builds no Kafka client")


def replay_conf(event_ids: Sequence[int]) -> dict[str, Any]:
    """The ``orders_dlq_replay`` conf that replays exactly these rows (if still approved)."""
    ids = sorted(set(event_ids))
    if not ids:
        raise ReviewError("nothing to replay: the preview selected no approved rows")
    if len(ids) > BULK_LIMIT:
        raise ReviewError(f"replay at most {BULK_LIMIT} rows at a time")
    return {
        "status": DlqStatus.APPROVED.value,
        "event_ids": ids,
        "max_messages": len(ids),
        "dry_run": False,
    }


# -- CSRF ------------------------------------------------------------------------------


def csrf_token(key: bytes, user_id: str, *, now: float | None = None) -> str:
    """A form token bound to the user and its time: ``<unix time>.<HMAC>``."""
    stamp = str(int(time.time() if now is None else now))
    return f"{stamp}.{_mac(key, user_id, stamp)}"


def csrf_valid(key: bytes, user_id: str, token: str | None, *, now: float | None = None) -> bool:
    """True for a token ``csrf_token`` made for this user within ``CSRF_MAX_AGE_S``."""
    stamp, dot, mac = (token or "").partition(".")
    if not dot or not stamp.isdigit():
        return False
    age = (time.time() if now is None else now) - int(stamp)
    if not -CLOCK_SKEW_S <= age <= CSRF_MAX_AGE_S:
        return False
    return hmac.compare_digest(mac, _mac(key, user_id, stamp))


def csrf_key(secret: str) -> bytes:
    """The HMAC key for the page's tokens, derived from a server secret."""
    return hashlib.sha256(b"orderproc-review-csrf|" + secret.encode()).digest()


def _mac(key: bytes, user_id: str, stamp: str) -> str:
    return hmac.new(key, f"{user_id}|{stamp}".encode(), hashlib.sha256).hexdigest()
