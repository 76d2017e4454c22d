"""The batch side through the command line, as processes, on each store: a fresh store
migrated with ``orderproc db upgrade``, then dead letters drained, corrected, approved,
replayed and reported with ``orderproc dlq ...`` and ``orderproc report``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orderproc.config import Settings
from orderproc.models import Order
from orderproc.store.engine import make_engine
from orderproc.store.migrate import head
from tests.support import with_search_path

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(
    request: pytest.FixtureRequest, postgres_server_url: str, tmp_path: Path
) -> Iterator[str]:
    """A store nobody has migrated: an empty PostgreSQL schema, or no SQLite file yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'orderproc.db'}"
        return
    schema = f"fresh_{uuid.uuid4().hex[:10]}"
    root = make_engine(postgres_server_url)
    with root.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(postgres_server_url, schema)
    finally:
        with root.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        root.dispose()


def test_a_fresh_store_is_migrated_then_the_dlq_goes_round_through_the_command_line(
    fresh_url: str,
    make_settings: Callable[..., Settings],
    run_cli: Helper,
    dead_letter: Helper,
    read_all: Helper,
    headers_of: Helper,
    tmp_path: Path,
) -> None:
    settings = make_settings(partitions=2, database_url=fresh_url, max_attempts=1)

    def ok(*args: str) -> str:
        done = run_cli(settings, *args)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
        return str(done.stdout)

    assert f"database at revision {head()}" in ok("db", "upgrade")
    assert f"database at revision {head()}" in ok("db", "upgrade")  # again: nothing to do
    dead_letter(settings, [Order("o-1", "Laptop", 150.0), Order("o-2", "Phone", 120.0)])

    assert "drained 2 record(s): 2 new failure(s)" in ok("dlq", "drain")
    assert "drained 0 record(s)" in ok("dlq", "drain")  # caught up: nothing stored twice
    listed = ok("dlq", "list", "--status", "new", "--json")
    ids = sorted(int(row["id"]) for row in _json(listed))
    assert len(ids) == 2
    ok("dlq", "edit", str(ids[0]), "--set", "price=90", "--if-version", "0")
    ok("dlq", "approve", str(ids[0]), "--if-version", "1", "--note", "fixed")
    ok("dlq", "reject", str(ids[1]), "--note", "a real price")

    plan = ok("dlq", "replay")  # a dry run unless --publish
    assert "dry run" in plan and "would publish" in plan and read_all(settings.orders_topic) == []
    # No consumer runs here: without a canary the run waits for no outcome.
    published = ok("dlq", "replay", "--publish", "--replay-id", "cli-run", "--canary", "0")
    assert "took 1 row(s), published 1" in published
    (copy,) = read_all(settings.orders_topic)
    assert headers_of(copy)["replay.id"] == "cli-run"
    assert "replay outcome: pending (replay cli-run)" in ok("dlq", "show", str(ids[0]))

    report = ok("report", "--out", str(tmp_path / "reports"))
    assert "Simulated error: high price" in report
    assert (tmp_path / "reports").is_dir() and any((tmp_path / "reports").iterdir())


def _json(out: str) -> list[dict[str, Any]]:
    value = json.loads(out)
    assert isinstance(value, list)
    return value
