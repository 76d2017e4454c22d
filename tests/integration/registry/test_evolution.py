"""Schemas that evolve without dead letters: writers of four versions in one stream (a field
added with a default, one removed that had a default, one renamed behind an alias), read
by this build's reader and by the newest one; an incompatible schema refused in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from orderproc.config import Settings
from orderproc.serde import OrderSchema, RegistrySerde, local_schema
from orderproc.serde.registry import RegistryClient
from tests.registry_support import INCOMPATIBLE, V2, V3, V4, Run, Subject

pytestmark = pytest.mark.integration


def records(prefix: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"orderId": f"{prefix}-{i}", "product": "item1", "price": 10.0 + i, **extra}
            for i in range(n)]  # fmt: skip


def test_a_stream_mixing_four_writer_versions_is_processed_by_old_and_new_readers_with_zero_dead_letters(  # noqa: E501
    registry_settings: Callable[..., Settings],
    versions: Callable[..., Subject],
    stranger_produce: Callable[..., None],
    consume: Callable[..., Run],
    registry: RegistryClient,
    read_all: Callable[..., list[Message]],
) -> None:
    settings = registry_settings()
    subject = versions(settings, v1=local_schema().text, v2=V2, v3=V3, v4=V4)
    assert len(set(subject.ids.values())) == 4
    stranger_produce(settings, local_schema().text, records("v1", 5))
    stranger_produce(settings, V2, records("v2", 5, currency="USD"))
    stranger_produce(settings, V3, records("v3", 5, channel="shop"))
    stranger_produce(settings, V4, records("v4", 5, sales_channel="app"))
    expected = {f"v{v}-{i}" for v in range(1, 5) for i in range(5)}

    this_build = consume(settings)  # reads with schemas/order.avsc (v1)
    newest = RegistrySerde(registry, topic=settings.orders_topic,
                           reader=OrderSchema.of(V4))  # fmt: skip
    latest_reader = consume(
        settings.model_copy(update={"consumer_group": settings.consumer_group + "-v4",
                                    "database_url": settings.database_url + "-v4"}),
        serde=newest,
    )  # fmt: skip

    for run in (this_build, latest_reader):
        assert set(run.processed) == expected
        assert run.stats.dead_lettered == 0
    assert read_all(settings.dlq_topic) == []
    # The newest reader resolved every writer into v4: defaults filled, the alias followed.
    v1_record = newest.deserialize(read_all(settings.orders_topic)[0].value())
    v3_record = newest.deserialize(read_all(settings.orders_topic)[10].value())
    assert v1_record["sales_channel"] == "web"  # v1 had no channel: the default
    assert v3_record["sales_channel"] == "shop"  # written as `channel`, read through the alias


def test_an_incompatible_schema_is_refused_by_check_and_at_registration_in_one_line(
    registry_settings: Callable[..., Settings],
    versions: Callable[..., Subject],
    run_cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    settings = registry_settings()
    versions(settings, v1=local_schema().text)
    candidate = tmp_path / "order-v2.avsc"
    candidate.write_text(INCOMPATIBLE)
    good = tmp_path / "order-v2-good.avsc"
    good.write_text(V2)

    checked = run_cli(settings, "schemas", "check", str(candidate))
    registered = run_cli(settings, "schemas", "register", str(candidate))
    fine = run_cli(settings, "schemas", "check", str(good))

    subject = f"{settings.orders_topic}-value"
    why = (
        f"incompatible with {subject} version 1 (BACKWARD): a reader of the new schema cannot "
        "read version 1: field currency (string) is not in it and has no default"
    )
    for done in (checked, registered):
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [f"orderproc: error: {why}"]
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip() == f"compatible with {subject} version 1 (BACKWARD)"
    shown = run_cli(settings, "schemas", "show")
    assert "version 1" in shown.stdout and "version 2" not in shown.stdout  # nothing registered
