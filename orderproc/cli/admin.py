"""``orderproc topics ...`` and ``orderproc db ...``."""

from __future__ import annotations

import typer

from orderproc.cli.common import settings_with

topics_app = typer.Typer(no_args_is_help=True)
db_app = typer.Typer(no_args_is_help=True)


@topics_app.command("create")
def topics_create() -> None:
    """Create orders, its retry topics and orders_dlq (existing ones are left alone)."""
    from orderproc.kafka.topics import ensure_topics, required_topics

    settings = settings_with()
    created = ensure_topics(settings)
    for name in required_topics(settings):
        print(f"{name}: {'created' if name in created else 'exists'}")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the Alembic migrations to ORDERPROC_DATABASE_URL (SQLite by default)."""
    from orderproc.store.engine import open_engine, redacted
    from orderproc.store.migrate import current, upgrade

    url = settings_with().effective_database_url
    with open_engine(url) as engine:
        upgrade(engine, revision)
        print(f"database at revision {current(engine)}: {redacted(url)}")
