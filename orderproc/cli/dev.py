"""``orderproc dev``: the local Kafka broker and PostgreSQL (no Docker)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)

PostgresFlag = Annotated[
    bool, typer.Option("--postgres", help="Also PostgreSQL (Debian packages; needs root).")
]


@app.command()
def up(postgres: PostgresFlag = False) -> None:
    """Start the local Kafka broker (and PostgreSQL with --postgres)."""
    # Imported per command so `orderproc --help` does not load librdkafka or psycopg.
    from orderproc.devstack.kafka import KafkaBroker

    result = KafkaBroker().up(progress=lambda note: typer.echo(f"kafka: {note}", err=True))
    status = result.status
    verb = "started" if result.started else "already running"
    typer.echo(f"kafka {status.version} {verb} pid={status.pid} bootstrap={status.bootstrap}")
    if postgres:
        from orderproc.devstack.postgres import postgres_up

        typer.echo(f"postgres running url={postgres_up()}")


@app.command()
def down(postgres: PostgresFlag = False) -> None:
    """Stop the local Kafka broker (and PostgreSQL with --postgres)."""
    from orderproc.devstack.kafka import KafkaBroker

    pid = KafkaBroker().down()
    typer.echo(f"kafka stopped pid={pid}" if pid is not None else "kafka was not running")
    if postgres:
        from orderproc.devstack.postgres import postgres_down

        typer.echo("postgres stopped" if postgres_down() else "postgres was not running")


@app.command()
def status() -> None:
    """Show whether the local broker and PostgreSQL are running."""
    from orderproc.devstack.kafka import KafkaBroker
    from orderproc.devstack.postgres import postgres_status

    typer.echo(KafkaBroker().status().describe())
    typer.echo(postgres_status().describe())
