"""``orderproc schemas register|check|show``: the order schema in the schema registry.

The subject follows the settings (``<orders topic>-value`` by default). Every refusal is
one line that says why: ``orderproc: error: incompatible with orders-value version 2
(BACKWARD): a reader of the new schema cannot read version 2: field currency (string)
is not in it and has no default``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orderproc.cli.common import echo, settings_with
from orderproc.errors import ConfigError, RegistryError
from orderproc.serde import OrderSchema, RegistrySerde, local_schema
from orderproc.serde.registry import redact
from orderproc.serde.subjects import DEFAULT_LEVEL, check, register, registered_versions

app = typer.Typer(no_args_is_help=True)

SchemaFile = Annotated[
    Path | None,
    typer.Argument(help="An Avro schema file (default: this build's schemas/order.avsc)."),
]
Subject = Annotated[
    str | None, typer.Option(help="Subject (default: from ORDERPROC_ORDERS_TOPIC and strategy).")
]


def _serde(topic: str | None = None) -> RegistrySerde:
    settings = settings_with(orders_topic=topic)
    if not settings.schema_registry_url:
        raise ConfigError("no schema registry: set ORDERPROC_SCHEMA_REGISTRY_URL")
    return RegistrySerde.from_settings(settings)


def _read(path: Path | None) -> OrderSchema:
    if path is None:
        return local_schema()
    try:
        return OrderSchema.of(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


@app.command("register")
def register_cmd(
    path: SchemaFile = None,
    compatibility: Annotated[
        str, typer.Option(help="BACKWARD, FORWARD, FULL (each also _TRANSITIVE) or NONE.")
    ] = DEFAULT_LEVEL,
    subject: Subject = None,
) -> None:
    """Register the schema under the subject with a compatibility level (BACKWARD)."""
    serde, schema = _serde(), _read(path)
    name = subject or serde.subject()
    found = register(serde.client, name, schema, compatibility)
    echo(f"registered {path or 'schemas/order.avsc'} under {name}: id {found.schema_id}, "
         f"version {found.version} (compatibility {compatibility.upper()})")  # fmt: skip


@app.command("check")
def check_cmd(path: Annotated[Path, typer.Argument(help="A candidate Avro schema file.")],
              subject: Subject = None) -> None:  # fmt: skip
    """Say whether a candidate schema may be registered next, and why not (exit 1)."""
    serde, schema = _serde(), _read(path)
    name = subject or serde.subject()
    verdict = check(serde.client, name, schema)
    if verdict.latest is None:
        echo(f"compatible: {name} has no version yet (compatibility {verdict.level})")
    elif verdict.compatible:
        echo(f"compatible with {name} version {verdict.latest} ({verdict.level})")
    else:
        raise RegistryError(
            f"incompatible with {name} version {verdict.latest} ({verdict.level}): {verdict.why}"
        )


@app.command("show")
def show_cmd(
    subject: Subject = None,
    schema_id: Annotated[int | None, typer.Option("--id", help="Show this schema id.")] = None,
) -> None:
    """The subject's versions (id, fields) and compatibility, or one schema by id."""
    serde = _serde()
    client = serde.client
    if schema_id is not None:
        text, kind = client.schema(schema_id)
        places = ", ".join(f"{s} v{v}" for s, v in client.where_is(schema_id)) or "no subject"
        echo(f"schema id {schema_id} ({kind}) in {places}:\n{text}")
        return
    name = subject or serde.subject()
    versions = registered_versions(client, name)
    echo(f"registry {redact(client.url)} subject {name} "
         f"compatibility {client.compatibility(name)}")  # fmt: skip
    if not versions:
        echo("  no version registered: `orderproc schemas register`")
    for v in versions:
        fields = ", ".join(f"{f['name']}:{_type(f['type'])}" for f in v.fields)
        mine = "  <- this build" if v.canonical == local_schema().canonical else ""
        echo(f"  version {v.version}  id {v.schema_id}  {v.full_name}({fields}){mine}")


def _type(kind: object) -> str:
    if isinstance(kind, list):
        return "|".join(_type(k) for k in kind)
    if isinstance(kind, dict):
        return str(kind.get("name") or kind.get("type"))
    return str(kind)
