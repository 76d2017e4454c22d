"""One source for the replay's options: the trigger form is derived from the pydantic model,
and the command line has an option for each (tested against the model)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from pydantic import Field

from orderproc.airflow.params import ReplayParams, ReplaySelection, form_params, replay_request
from orderproc.cli import app
from orderproc.models import ReplayOptions

pytestmark = pytest.mark.unit

CLI_OPTION = {
    "max_messages": "--max-messages",
    "rate_per_sec": "--rate",
    "max_replays": "--max-replays",
    "canary": "--canary",
    "step_rows": "--step-rows",
    "pause_at_percent": "--pause-at",
    "outcome_timeout_s": "--outcome-timeout",
}
"""Each replay option's name on the command line."""


def test_every_field_of_the_model_is_a_form_field_with_its_default_bounds_and_words() -> None:
    form = form_params(ReplayParams)
    schema = ReplayParams.model_json_schema()["properties"]

    assert list(form) == list(ReplayParams.model_fields)
    for name, field in ReplayParams.model_fields.items():
        param, prop = form[name], schema[name]
        default = field.get_default(call_default_factory=True)
        assert param.value == (None if default == () else default), name
        assert param.schema["title"] == field.title and param.description == field.description
        choices = [prop, *prop.get("anyOf", ())]  # an optional value: its schema, or null
        for bound in ("minimum", "maximum", "exclusiveMinimum", "pattern", "enum", "format"):
            expected = next((c[bound] for c in choices if bound in c), None)
            assert param.schema.get(bound) == expected, (name, bound)


def test_a_new_option_is_one_field() -> None:
    class MoreOptions(ReplayOptions):
        burst: int = Field(default=5, ge=1, title="Burst", description="Records at once.")

    class MoreParams(MoreOptions, ReplaySelection):
        dry_run: bool = True

    form = form_params(MoreParams)

    assert form["burst"].value == 5
    assert form["burst"].schema == {"title": "Burst", "minimum": 1, "type": "integer"}


def test_the_form_checks_what_the_model_checks() -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    form = form_params(ReplayParams)

    assert form["canary"].resolve(25) == 25 and form["canary"].resolve("5%") == "5%"
    for bad in ("5 %", "ten", -1):
        with pytest.raises(ParamValidationError):
            form["canary"].resolve(bad)
    with pytest.raises(ParamValidationError):
        form["pause_at_percent"].resolve(101)


def test_the_form_s_values_become_the_request_every_option_as_given() -> None:
    values = {"canary": 25, "step_rows": 7, "pause_at_percent": 20, "outcome_timeout_s": 30}

    request = replay_request(ReplayParams.parse({**values, "dry_run": False}))

    assert (request.canary, request.step_rows) == ("25", 7)
    assert (request.pause_at_percent, request.outcome_timeout_s) == (20, 30)
    assert request.asked["canary"] == "25" and request.asked["dry_run"] is False


def test_the_command_line_has_an_option_for_every_replay_option_with_its_default() -> None:
    replay = _command("dlq", "replay")
    options = {name for p in replay.params for name in p.opts}
    helps = {name: p for p in replay.params for name in p.opts}

    assert set(CLI_OPTION) == set(ReplayOptions.model_fields)
    for field, option in CLI_OPTION.items():
        assert option in options, option
        default = ReplayOptions.model_fields[field].default
        assert f"[default: {default}]" in str(getattr(helps[option], "help", "")), option


def _command(*path: str) -> Any:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command
