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


def demo(
    orders: int = typer.Option(40, min=1, help="Orders to produce."),
    rate: float = typer.Option(20.0, min=0, help="Orders per second."),
    keep_running: bool = typer.Option(False, help="Leave the local broker running afterwards."),
) -> None:
    """Run the main job end to end on the local broker and the embedded SQLite store."""
    from orderproc.devstack.demo import run_batch_cycle, run_live_stream
    from orderproc.devstack.kafka import KafkaBroker, metadata_answers
    from orderproc.devstack.settings import with_dev_data_dir
    from orderproc.kafka.topics import ensure_topics
    from orderproc.store.engine import open_engine, redacted
    from orderproc.store.migrate import upgrade

    settings = with_dev_data_dir(settings_with())
    broker = KafkaBroker()
    # A broker already answering at ORDERPROC_BOOTSTRAP_SERVERS is used as it is.
    external = metadata_answers(settings.bootstrap_servers, 3.0)
    started = False if external else broker.up().started
    try:
        where = settings.bootstrap_servers if external else broker.status().describe()
        print(f"== broker: {where}")
        ensure_topics(settings)
        with open_engine(settings.effective_database_url) as engine:
            upgrade(engine)
        print(f"== store: {redacted(settings.effective_database_url)}")
        threshold = settings.price_threshold
        print(f"== live stream: {orders} orders at {rate}/s; price > {threshold:g} fails")
        summary = run_live_stream(settings, orders=orders, rate=rate, echo=print)
        print(
            "== summary: "
            f"processed={summary.get('processed', '?')} retried={summary.get('retried', '?')} "
            f"dead-lettered={summary.get('dead_lettered', '?')} "
            f"running average={summary.get('avg', '?')}"
        )
        run_batch_cycle(settings, echo=print)
    finally:
        if started and not keep_running:
            broker.down()
            print("== broker stopped (use --keep-running to leave it up)")
