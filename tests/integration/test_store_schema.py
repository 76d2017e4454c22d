"""The migrations build exactly the tables the code declares, on both stores: a column
added to ``orderproc/store/tables.py`` without its migration (or the other way round)
fails here, not on a user's database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from orderproc.store.engine import open_engine
from orderproc.store.migrate import current, head
from orderproc.store.tables import Base
from tests.support import migrated_schema

pytestmark = pytest.mark.integration


def test_a_migrated_store_matches_the_declared_tables(engine: Engine) -> None:
    assert current(engine) == head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store nothing has migrated yet, on each dialect in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server = request.getfixturevalue("postgres_server_url")
    with migrated_schema(server, f"t_{uuid.uuid4().hex[:10]}", migrate=False) as url:
        yield url


def test_workers_started_at_once_on_a_fresh_store_migrate_it_once(
    fresh_store: str, tmp_path: Path
) -> None:
    """Queue mode starts many consumers at once; each migrates the store when it starts."""
    env = {**os.environ, "ORDERPROC_DATABASE_URL": fresh_store}
    procs = [subprocess.Popen([sys.executable, "-m", "orderproc", "db", "upgrade"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    results = [(p.wait(180), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], [err for _, err in results]
    with open_engine(fresh_store) as engine:
        assert current(engine) == head()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
