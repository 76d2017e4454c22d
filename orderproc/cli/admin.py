"""``orderproc topics ...`` and ``orderproc db ...``."""

from __future__ import annotations

import sys

import typer

from orderproc.cli.common import settings_with

topics_app = typer.Typer(no_args_is_help=True)
db_app = typer.Typer(no_args_is_help=True)


@topics_app.command("create")
def topics_create() -> None:
    """Create orders, its retry topics and orders_dlq with ORDERPROC_REPLICATION_FACTOR
    replicas and ORDERPROC_MIN_INSYNC_REPLICAS (existing ones are left alone); refused, in
    one line, when fewer brokers are up than the replication factor needs."""
    from orderproc.kafka.access import connect
    from orderproc.kafka.replicas import replication_of
    from orderproc.kafka.topics import ensure_topics, required_topics

    settings = settings_with()
    created = ensure_topics(settings)
    admin, metadata = connect(settings.kafka_config(), settings.admin_timeout_s)
    admin.close()
    factor = settings.replication_factor
    print(f"# replication factor {factor}, min.insync.replicas {settings.min_insync_replicas}",
          file=sys.stderr)  # fmt: skip
    for name in required_topics(settings):
        have = replication_of(metadata, name)
        note = "" if have >= factor else f" (x{have}: existing topics keep their replication)"
        print(f"{name}: {'created' if name in created else 'exists'}{note}")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the Alembic migrations to ORDERPROC_DATABASE_URL (SQLite by default)."""
    from orderproc.store.engine import open_engine, redacted
    from orderproc.store.migrate import current, upgrade

    url = settings_with().effective_database_url
    with open_engine(url) as engine:
        upgrade(engine, revision)
        print(f"database at revision {current(engine)}: {redacted(url)}")
