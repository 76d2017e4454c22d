"""``orderproc dlq list|show|approve|reject|edit`` against PostgreSQL and SQLite."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from orderproc.cli.review import register
from orderproc.config import get_settings
from orderproc.dlq.store import DlqStore
from orderproc.errors import ReviewError
from orderproc.models import Order
from orderproc.store.engine import make_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def store(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DlqStore]:
    monkeypatch.setenv("ORDERPROC_DATABASE_URL", db_url)
    get_settings.cache_clear()
    engine = make_engine(db_url)
    yield DlqStore(engine)
    engine.dispose()
    get_settings.cache_clear()


@pytest.fixture
def ids(store: DlqStore, seed_dlq: Callable[..., list[int]]) -> list[int]:
    return seed_dlq(store, [Order("o-1", "Laptop", 150.0), Order("o-2", "Phone", 120.0), None])


def cli(*args: str) -> Result:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, list(args))


def refused(result: Result) -> str:
    """The one-line message of an expected failure (``main()`` prints it)."""
    assert result.exit_code != 0
    assert isinstance(result.exception, ReviewError)
    message = str(result.exception)
    assert "\n" not in message
    return message


def test_list_shows_a_table_and_filters(
    ids: list[int], table_rows: Callable[[str], list[list[str]]]
) -> None:
    table = cli("list")
    assert table.exit_code == 0, table.output
    rows = table_rows(table.output)
    assert rows[0] == [
        "ID", "STATUS", "ORDER", "PRODUCT", "PRICE", "FIX", "CATEGORY", "REPLAYS", "REASON",
    ]  # fmt: skip
    assert rows[1] == [
        str(ids[0]), "new", "o-1", "Laptop", "150.00", "-", "business_rule", "0",
        "Simulated error: high price",
    ]  # fmt: skip
    assert rows[-1] == ["(3 event(s))"]

    only = json.loads(cli("list", "--order-id", "o-2", "--json").output)
    assert [(e["id"], e["order_id"], e["price"]) for e in only] == [(ids[1], "o-2", 120.0)]
    assert (
        json.loads(cli("list", "--category", "deserialization", "--json").output)[0]["id"]
        == (ids[2])
    )
    assert refused(cli("list", "--status", "done")).startswith("unknown status 'done'")


def test_approve_records_who_and_why(store: DlqStore, ids: list[int]) -> None:
    result = cli("approve", str(ids[0]), str(ids[1]), "--note", "supplier fixed the feed")

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"approved 2 event(s): {ids[0]}, {ids[1]}"
    event = store.get(ids[0])
    assert (event.status, event.reviewed_by, event.review_note) == (
        "approved",
        f"cli:{getpass.getuser()}",
        "supplier fixed the feed",
    )
    last = store.audit_trail(ids[0])[-1]
    assert (last.action, last.actor, last.note) == (
        "approved",
        f"cli:{getpass.getuser()}",
        "supplier fixed the feed",
    )


def test_review_actions_only_apply_to_new_events_all_or_none(
    store: DlqStore, ids: list[int]
) -> None:
    assert cli("reject", str(ids[0]), "--actor", "bob").exit_code == 0

    message = refused(cli("approve", str(ids[1]), str(ids[0])))

    assert message == (
        f"cannot approve, nothing changed: event {ids[0]} is rejected (only new records qualify)"
    )
    assert store.get(ids[1]).status == "new"  # the valid id in the same command is untouched
    assert (
        refused(cli("reject", "999")) == "cannot reject, nothing changed: no DLQ event with id 999"
    )
    assert refused(cli("show", "999")) == "no DLQ event with id 999"
    # The valid id comes first: the message still names the id that blocked, not the valid one
    # the rolled-back update had already changed.
    message = refused(cli("approve", str(ids[1]), "999999"))
    assert message == "cannot approve, nothing changed: no DLQ event with id 999999"
    assert store.get(ids[1]).status == "new"


def test_edit_stores_a_validated_correction_with_an_audit_row(
    store: DlqStore, ids: list[int], table_rows: Callable[[str], list[list[str]]]
) -> None:
    result = cli("edit", str(ids[0]), "--set", "price=42.5", "--note", "typo in price")

    assert result.exit_code == 0, result.output
    event = store.get(ids[0])
    assert event.corrected_payload == {"orderId": "o-1", "product": "Laptop", "price": 42.5}
    assert event.price == 150.0  # the original stays as it was dead-lettered
    last = store.audit_trail(ids[0])[-1]
    assert (last.action, last.note) == ("edited", "typo in price")
    assert last.details is not None and last.details["before"]["price"] == 150.0
    [listed] = table_rows(cli("list", "--order-id", "o-1").output)[1:-1]
    assert (listed[4], listed[5]) == ("150.00", "42.50")  # the price, and the correction


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("price=-3", "price is negative"),
        ("price=cheap", "price must be a float"),
        ("colour=red", "unknown field 'colour'"),
        ("price", "--set expects field=value"),
        ("orderId=", "orderId is empty"),
    ],
)
def test_invalid_corrections_are_refused(
    store: DlqStore, ids: list[int], assignment: str, expected: str
) -> None:
    assert expected in refused(cli("edit", str(ids[0]), "--set", assignment))
    assert store.get(ids[0]).corrected_payload is None
    assert [a.action for a in store.audit_trail(ids[0])] == ["drained"]


def test_an_undecodable_order_can_be_rebuilt_field_by_field(
    store: DlqStore, ids: list[int]
) -> None:
    assert "missing field" in refused(cli("edit", str(ids[2]), "--set", "price=5"))

    result = cli(
        "edit", str(ids[2]), "--set", "orderId=o-3", "--set", "product=Desk", "--set", "price=5"
    )

    assert result.exit_code == 0, result.output
    assert store.get(ids[2]).corrected_payload == {
        "orderId": "o-3",
        "product": "Desk",
        "price": 5.0,
    }


def test_a_rejected_event_cannot_be_edited(store: DlqStore, ids: list[int]) -> None:
    store.reject([ids[0]], actor="bob")

    assert refused(cli("edit", str(ids[0]), "--set", "price=1")) == (
        f"cannot edit {ids[0]}: status is rejected (only new/approved records can be edited)"
    )


def test_show_prints_the_record_and_its_audit_trail(store: DlqStore, ids: list[int]) -> None:
    store.approve([ids[0]], actor="alice", note="ok")

    text = cli("show", str(ids[0])).output
    data = json.loads(cli("show", str(ids[0]), "--json").output)

    assert "Simulated error: high price" in text
    assert "approved  alice (ok)" in text
    assert data["envelope"]["failed_order"]["orderId"] == "o-1"
    assert [a["action"] for a in data["audit"]] == ["drained", "approved"]


def test_a_store_that_is_not_migrated_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
    env["ORDERPROC_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    env["ORDERPROC_DATA_DIR"] = str(tmp_path / "data")

    result = subprocess.run(
        [sys.executable, "-m", "orderproc", "dlq", "list"], env=env, capture_output=True, text=True
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("orderproc: error: the DLQ store failed (no such table: dlq_events)")
