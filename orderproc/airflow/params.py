"""DAG parameters, validated once: the trigger-form values become typed models.

Light to import (pydantic and orderproc's vocabulary only), so DAG files may use
it while they are parsed. A value that does not validate raises ``ConfigError``
with one line naming the parameter; the tasks turn that into a failure without
retries (retrying cannot fix a parameter).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

if TYPE_CHECKING:  # the DLQ wing imports Kafka clients: too heavy while a DAG file parses
    from orderproc.dlq.replay import ReplayRequest

from orderproc.clock import as_utc
from orderproc.errors import HIGH_PRICE_REASON, ConfigError, ErrorCategory
from orderproc.models import REPLAYABLE_STATUSES, REVIEW_SLO_HOURS, DlqStatus, ReplayOptions


def _strings(value: Any) -> Any:
    """``None``, ``""``, a string or a list of strings -> a tuple without blanks."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return tuple(s for s in (str(v).strip() for v in value) if s)
    return value


def _none_is_empty(value: Any) -> Any:
    return () if value is None else value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def in_utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC; a time whose offset takes it past year 1 or 9999 is refused."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


Strings = Annotated[tuple[str, ...], BeforeValidator(_strings)]
Ids = Annotated[tuple[Annotated[int, Field(ge=1)], ...], BeforeValidator(_none_is_empty)]
Moment = Annotated[datetime | None, BeforeValidator(_blank_is_none)]


class Params(BaseModel):
    """A set of parameters validated in one go (trigger forms, the review page's forms)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def parse(cls, params: Any) -> Any:
        """Validate ``params`` (a mapping); ``ConfigError`` with one line if they are wrong."""
        try:
            return cls.model_validate(dict(params or {}))
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "params"
            why = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"parameter {name}: {why}") from exc


class ReplaySelection(Params):
    """Which rows a replay takes (empty lists: any)."""

    status: str = Field(
        default=DlqStatus.APPROVED.value,
        title="Status",
        description="Replay rows in this review state.",
        json_schema_extra={"enum": list(REPLAYABLE_STATUSES)},
    )
    event_ids: Ids = Field(
        default=(),
        title="DLQ event ids",
        description="Only these rows of the DLQ store (the review page fills this; empty: any).",
    )
    order_ids: Strings = Field(
        default=(), title="Order ids", description="Only these orders (one per line; empty: any)."
    )
    reasons: Strings = Field(
        default=(),
        title="Reasons",
        description="Only rows dead-lettered for these reasons (empty: any).",
        examples=[HIGH_PRICE_REASON, "orderId is empty", "product is empty"],
    )
    categories: Strings = Field(
        default=(),
        title="Error categories",
        description="Only rows of these error categories (empty: any).",
        examples=[c.value for c in ErrorCategory],
    )
    since: Moment = Field(
        default=None,
        title="Dead-lettered since",
        description="An RFC 3339 time with its offset, e.g. 2026-03-01T00:00:00Z.",
    )
    until: Moment = Field(
        default=None,
        title="Dead-lettered before",
        description="An RFC 3339 time with its offset; after `since`.",
    )

    @field_validator("status")
    @classmethod
    def _replayable(cls, value: str) -> str:
        if value not in REPLAYABLE_STATUSES:
            raise ValueError(f"must be one of {', '.join(REPLAYABLE_STATUSES)}")
        return value

    @field_validator("since", "until")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return in_utc(value)

    @field_validator("until")
    @classmethod
    def _after_since(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if value is not None and since is not None and value <= since:
            raise ValueError(f"must be after since ({since.isoformat()}), got {value.isoformat()}")
        return value


class ReplayParams(ReplayOptions, ReplaySelection):
    """The ``orders_dlq_replay`` trigger form (a dry run unless it says otherwise): the
    selection, the replay's options (``orderproc.models.ReplayOptions``), and what only
    Airflow needs. The form is derived from these fields (``form_params``)."""

    dry_run: bool = Field(
        default=True,
        title="Dry run",
        description="Only show what would be replayed. Switch off to publish.",
    )
    pause_fails_run: bool = Field(
        default=True,
        title="A pause fails the run",
        description="A run that paused (or whose replayed orders failed again past the "
        "threshold) ends failed, so the operations alerts see it.",
    )


def replay_request(params: ReplayParams) -> ReplayRequest:
    """The replay a validated trigger form (or the CLI's options) asks for: its selection,
    and every option of ``ReplayOptions`` as given (a new option needs no edit here)."""
    from orderproc.dlq.filters import EventFilter
    from orderproc.dlq.replay import ReplayRequest

    options = {name: getattr(params, name) for name in ReplayOptions.model_fields}
    return ReplayRequest(
        selection=EventFilter(
            status=params.status,
            ids=params.event_ids,
            order_ids=params.order_ids,
            reasons=params.reasons,
            categories=params.categories,
            since=params.since,
            until=params.until,
        ),
        dry_run=params.dry_run,
        asked=params.model_dump(mode="json"),
        **options,
    )


def form_params(model: type[BaseModel]) -> dict[str, Any]:
    """A DAG's trigger form derived from ``model``: one Airflow ``Param`` per field, with
    the field's default, title, description and JSON schema (type, bounds, pattern,
    format, items, enum, examples). A list that may be empty is optional in the form
    (``null`` in its type: no "required" star, empty is ``None``), as is a time."""
    from airflow.sdk import Param

    schema = model.model_json_schema(mode="validation")
    form: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        prop = _flat(dict(schema["properties"][name]))
        prop.pop("default", None)
        default = field.get_default(call_default_factory=True)
        if prop.get("type") == "array" and not default:
            default, prop["type"] = None, ["null", "array"]
        title, description = prop.pop("title", None), prop.pop("description", None)
        form[name] = Param(default, title=title, description=description, **prop)
    return form


def _flat(prop: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` (pydantic's optional) as X with ``null`` in its type."""
    choices = prop.pop("anyOf", None)
    if not choices:
        return prop
    kinds = [c["type"] for c in choices if "type" in c]
    merged = {k: v for c in choices for k, v in c.items() if k != "type"}
    nulls = ["null"] if "null" in kinds else []
    return {**merged, **prop, "type": nulls + [k for k in kinds if k != "null"]}


class ReportParams(Params):
    """The ``orders_dlq_report`` params (manual runs)."""

    reports_dir: Path | None = None
    since: Moment = None
    slo_hours: float | None = Field(default=REVIEW_SLO_HOURS, ge=0)
    """The run fails (after writing the report) when the oldest unresolved failure is older;
    None: no check."""

    @field_validator("since")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return in_utc(value)


class DrainParams(Params):
    """The ``orders_dlq_drain`` params."""

    max_messages: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
