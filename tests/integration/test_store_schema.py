"""The migrations build exactly the tables the code declares, on both stores: a column
added to ``orderproc/store/tables.py`` without its migration (or the other way round)
fails here, not on a user's database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from orderproc.store.migrate import current, head
from orderproc.store.tables import Base

pytestmark = pytest.mark.integration


def test_a_migrated_store_matches_the_declared_tables(engine: Engine) -> None:
    assert current(engine) == head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []
