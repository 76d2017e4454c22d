"""The ``orderproc`` command line."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError as PydanticValidationError

from orderproc.errors import OrderProcError

app = typer.Typer(
    name="orderproc",
    help="Order processing on Apache Kafka: workers, dead-letter queue, review and replay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so `orderproc --help` stays fast and each group owns its module.
    from orderproc.cli import admin, dev, dlq, report, review, schemas, status, workers

    app.registered_commands.extend(workers.app.registered_commands)
    app.command()(admin.demo)
    app.registered_commands.extend(report.app.registered_commands)
    app.registered_commands.extend(status.app.registered_commands)
    review.register(dlq.app)
    app.add_typer(dlq.app, name="dlq", help="Watch, review and replay the dead-letter queue.")
    app.add_typer(admin.topics_app, name="topics", help="Kafka topics.")
    app.add_typer(admin.db_app, name="db", help="Database schema (Alembic).")
    app.add_typer(schemas.app, name="schemas", help="The order schema in the schema registry.")
    app.add_typer(dev.app, name="dev", help="Local Kafka broker and PostgreSQL (no Docker).")


_register()


def main() -> None:
    """Entry point: expected failures become one line on stderr and exit code 1."""
    try:
        app()
    except OrderProcError as exc:
        print(f"orderproc: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        print(
            f"orderproc: error: invalid setting ORDERPROC_{field.upper()}: {first['msg']}",
            file=sys.stderr,
        )
        sys.exit(2)
