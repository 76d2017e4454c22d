"""Registering the order schema under its subject and checking a candidate against it.

What ``orderproc schemas register|check`` and ``orderproc dev up --registry`` do. A
refusal is one line that says *why*: the registry only answers "incompatible", so the
reason is worked out here from the registered versions (``why_incompatible``).
"""

from __future__ import annotations

from dataclasses import dataclass

from orderproc.errors import RegistryError
from orderproc.serde.registry import SUBJECT_NOT_FOUND, Registered, RegistryClient
from orderproc.serde.schemas import LEVELS, OrderSchema, why_incompatible

DEFAULT_LEVEL = "BACKWARD"


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate schema may be registered under a subject, and why not."""

    compatible: bool
    level: str
    latest: int | None
    """The subject's latest version (None: a new subject)."""
    why: str = ""


def registered_versions(client: RegistryClient, subject: str) -> list[OrderSchema]:
    """Every version of ``subject``, oldest first (empty for a new subject)."""
    try:
        numbers = client.versions(subject)
    except RegistryError as exc:
        if exc.error_code == SUBJECT_NOT_FOUND or exc.status == 404:
            return []
        raise
    out = []
    for number in sorted(numbers):
        found = client.version(subject, number)
        out.append(OrderSchema.of(found.text, schema_id=found.schema_id, subject=subject,
                                  version=found.version))  # fmt: skip
    return out


def check(client: RegistryClient, subject: str, candidate: OrderSchema) -> Verdict:
    """Ask the registry whether ``candidate`` may follow the subject's versions."""
    versions = registered_versions(client, subject)
    level = client.compatibility(subject).upper()
    if not versions:
        return Verdict(True, level, None)
    latest = versions[-1].version
    if client.compatible(subject, candidate.text):
        return Verdict(True, level, latest)
    why = why_incompatible(candidate, versions, level) or (
        f"the registry at {client.url} refuses it under {level}"
    )
    return Verdict(False, level, latest, why)


def register(
    client: RegistryClient, subject: str, schema: OrderSchema, level: str = DEFAULT_LEVEL
) -> Registered:
    """Set the subject's compatibility ``level``, then register ``schema`` (the same schema
    again keeps its id and version).

    Raises:
        RegistryError: the level is unknown, or the schema breaks it (one line saying why).
    """
    level = level.upper()
    if level not in LEVELS:
        raise RegistryError(f"unknown compatibility level {level!r} (one of: {', '.join(LEVELS)})")
    client.set_compatibility(subject, level)
    try:
        client.register(subject, schema.text)
    except RegistryError as exc:
        if exc.status not in (409, 422):
            raise
        verdict = check(client, subject, schema)
        why = verdict.why if not verdict.compatible else str(exc)
        raise RegistryError(
            f"incompatible with {subject} version {verdict.latest} ({level}): {why}",
            status=exc.status,
        ) from None
    return client.lookup(subject, schema.text)
