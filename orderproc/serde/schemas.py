"""The order schema: the local ``schemas/order.avsc``, a registered version of it, and why two
versions cannot be read one as the other.

``OrderSchema`` is one version with its fields; every reader of field names (the review
page, ``orderproc dlq edit``, corrections) asks it, never the ``.avsc`` file. The local
file is this build's *reader* schema; with the registry, a corrected order is written
with the subject's latest version, whose fields may be more.

``why_incompatible`` names, in one line, the first rule of Avro schema resolution that a
reader schema breaks for a writer schema (a field without default the writer lacks, a
type that cannot be promoted, a renamed record): the registry only says "incompatible".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

_PACKAGE_SCHEMAS = Path(__file__).resolve().parent.parent / "_schemas"
_REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
LOCAL_SCHEMA = "order.avsc"

PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
"""Writer type -> reader types Avro promotes it to."""

LEVELS = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
          "FULL_TRANSITIVE", "NONE")  # fmt: skip
"""The registry's compatibility levels (Confluent's names)."""


def schema_path(name: str) -> Path:
    """Path of a file under ``schemas/`` (repository checkout or installed wheel)."""
    for folder in (_REPO_SCHEMAS, _PACKAGE_SCHEMAS):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {name} not found in {_REPO_SCHEMAS} or {_PACKAGE_SCHEMAS}")


@dataclass(frozen=True)
class OrderSchema:
    """One version of the order schema: its text, its parsed form and, when registered,
    its id, subject and version."""

    text: str
    parsed: Any = field(repr=False, compare=False)
    schema_id: int | None = None
    subject: str | None = None
    version: int | None = None

    @classmethod
    def of(cls, text: str, **where: Any) -> OrderSchema:
        """Parse ``text``; ``ValueError`` names what is wrong with it."""
        try:
            parsed = fastavro.parse_schema(json.loads(text))
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise ValueError(f"not an Avro schema: {exc}") from exc
        return cls(text, parsed, **where)

    @property
    def fields(self) -> list[dict[str, Any]]:
        """The record's fields (name, type, default), empty when it is not a record."""
        if not isinstance(self.parsed, dict) or self.parsed.get("type") != "record":
            return []
        return list(self.parsed["fields"])

    @property
    def field_types(self) -> dict[str, Any]:
        return {f["name"]: f["type"] for f in self.fields}

    @property
    def full_name(self) -> str:
        """``com.assignment.Order``, or the type of a schema that is not a named one."""
        if isinstance(self.parsed, dict):
            return str(self.parsed.get("name") or self.parsed.get("type"))
        return str(self.parsed)

    @property
    def canonical(self) -> str:
        """Avro's parsing canonical form: equal for schemas that read bytes alike."""
        return str(to_parsing_canonical_form(self.parsed))

    def describe(self) -> str:
        """``id 7 (orders-value v3)``, or ``the local schemas/order.avsc``."""
        if self.schema_id is None:
            return f"the local schemas/{LOCAL_SCHEMA}"
        where = f" ({self.subject} v{self.version})" if self.subject and self.version else ""
        return f"id {self.schema_id}{where}"


@cache
def local_schema() -> OrderSchema:
    """This build's order schema (``schemas/order.avsc``), parsed once per process."""
    return OrderSchema.of(schema_path(LOCAL_SCHEMA).read_text().strip())


def load_schema(name: str = LOCAL_SCHEMA) -> Any:
    """A schema under ``schemas/``, parsed (fastavro's form)."""
    if name == LOCAL_SCHEMA:
        return local_schema().parsed
    return fastavro.parse_schema(json.loads(schema_path(name).read_text()))


# -- compatibility ---------------------------------------------------------------------


def why_incompatible(
    candidate: OrderSchema, registered: list[OrderSchema], level: str
) -> str | None:
    """Why ``candidate`` breaks ``level`` against the registered versions (oldest first);
    None when no rule is broken. Non-transitive levels look at the latest version only."""
    level = level.upper()
    if level == "NONE" or not registered:
        return None
    against = registered if level.endswith("_TRANSITIVE") else registered[-1:]
    for old in reversed(against):
        name = f"version {old.version}" if old.version else "the registered schema"
        if level.startswith(("BACKWARD", "FULL")):
            why = unreadable(old.parsed, candidate.parsed)
            if why:
                return f"a reader of the new schema cannot read {name}: {why}"
        if level.startswith(("FORWARD", "FULL")):
            why = unreadable(candidate.parsed, old.parsed)
            if why:
                return f"a reader of {name} cannot read the new schema: {why}"
    return None


def unreadable(writer: Any, reader: Any, where: str = "") -> str | None:
    """The first reason data written with ``writer`` cannot be read with ``reader``."""
    kind_w, kind_r = _kind(writer), _kind(reader)
    if kind_r == "union":
        if kind_w == "union":
            return next((why for b in writer if (why := _no_branch(b, reader, where))), None)
        return _no_branch(writer, reader, where)
    if kind_w == "union":
        return next((why for b in writer if (why := unreadable(b, reader, where))), None)
    if kind_w != kind_r and kind_r not in PROMOTIONS.get(kind_w, ()):
        return f"{where or 'the value'} is {_show(writer)} in the writer, {_show(reader)} here"
    if kind_r == "record":
        return _record(writer, reader, where)
    if kind_r in ("enum", "fixed") and not _same_name(writer, reader):
        return f"{where or 'the value'}: {kind_r} {writer['name']} is not {reader['name']}"
    if kind_r == "enum":
        extra = sorted(set(writer["symbols"]) - set(reader["symbols"]))
        if extra and "default" not in reader:
            return f"{where or 'the value'}: symbol {extra[0]} is unknown here (no default)"
    if kind_r == "fixed" and writer["size"] != reader["size"]:
        return f"{where or 'the value'}: fixed size {writer['size']} is not {reader['size']}"
    if kind_r == "array":
        return unreadable(writer["items"], reader["items"], f"{where}[]")
    if kind_r == "map":
        return unreadable(writer["values"], reader["values"], f"{where}{{}}")
    return None


def _record(writer: dict[str, Any], reader: dict[str, Any], where: str) -> str | None:
    if not _same_name(writer, reader):
        return f"record {writer['name']} is not {reader['name']} (and no alias says so)"
    written = {f["name"]: f for f in writer["fields"]}
    for f in reader["fields"]:
        names = [f["name"], *f.get("aliases", ())]
        found = next((written[n] for n in names if n in written), None)
        path = f"{where}.{f['name']}" if where else f"field {f['name']}"
        if found is None:
            if "default" not in f:
                return f"{path} ({_show(f['type'])}) is not in it and has no default"
            continue
        why = unreadable(found["type"], f["type"], path)
        if why:
            return why
    return None


def _no_branch(writer: Any, union: list[Any], where: str) -> str | None:
    if any(unreadable(writer, branch, where) is None for branch in union):
        return None
    return f"{where or 'the value'} is {_show(writer)} in the writer, not one of {_show(union)}"


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema.get("type"))
    return str(schema)


def _same_name(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    return writer.get("name") == reader.get("name") or writer.get("name") in reader.get(
        "aliases", ()
    )


def _show(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_show(s) for s in schema) + "]"
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("type"))
    return str(schema)
