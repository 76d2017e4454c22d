"""Alembic, driven from code: ``orderproc db upgrade`` and the test fixtures call this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from orderproc.store.engine import store_errors

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # The engine travels as an attribute: URLs with '%' would break configparser.
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``.

    Raises:
        StoreError: the database cannot be reached or refused the migration (one line).
    """
    where = engine.url.render_as_string(hide_password=True)
    with store_errors(f"could not migrate the store at {where}"):
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def head() -> str:
    """The newest revision this build's migrations know."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    found = ScriptDirectory.from_config(cfg).get_current_head()
    assert found is not None, "the migrations have no head"
    return found


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
