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
from orderproc.errors import ConfigError
from orderproc.models import DEFAULT_MAX_REPLAYS, REPLAYABLE_STATUSES, REVIEW_SLO_HOURS, DlqStatus


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


class ReplayParams(Params):
    """The ``orders_dlq_replay`` trigger form (a dry run unless it says otherwise)."""

    status: str = DlqStatus.APPROVED.value
    event_ids: Ids = ()
    order_ids: Strings = ()
    reasons: Strings = ()
    categories: Strings = ()
    since: Moment = None
    until: Moment = None
    max_messages: int = Field(default=100, ge=1)
    rate_per_sec: float = Field(default=0.0, ge=0)
    dry_run: bool = True
    max_replays: int = Field(default=DEFAULT_MAX_REPLAYS, ge=1)

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


def replay_request(params: ReplayParams) -> ReplayRequest:
    """The replay a validated trigger form (or the CLI's options) asks for."""
    from orderproc.dlq.filters import EventFilter
    from orderproc.dlq.replay import ReplayRequest

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
        max_messages=params.max_messages,
        rate_per_sec=params.rate_per_sec,
        dry_run=params.dry_run,
        max_replays=params.max_replays,
    )


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
