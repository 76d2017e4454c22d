"""The ``orderproc`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable

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
    from orderproc.cli import admin, dlq, report, review, schemas, status, workers

    app.registered_commands.extend(workers.app.registered_commands)
    _register_dev()
    app.registered_commands.extend(report.app.registered_commands)
    app.registered_commands.extend(status.app.registered_commands)
    review.register(dlq.app)
    app.add_typer(dlq.app, name="dlq", help="Watch, review and replay the dead-letter queue.")
    app.add_typer(admin.topics_app, name="topics", help="Kafka topics.")
    app.add_typer(admin.db_app, name="db", help="Database schema (Alembic).")
    app.add_typer(schemas.app, name="schemas", help="The order schema in the schema registry.")


def _register_dev() -> None:
    """``orderproc demo`` and ``orderproc dev``: development tools that live in the repository's
    ``devstack/`` beside this package, not in it. Installed from a checkout (``make install``)
    they are importable; the shipped wheel and image say where to find them instead."""
    try:
        from devstack.cli import app as dev_app
        from devstack.cli import demo
    except ModuleNotFoundError as exc:
        if exc.name != "devstack":
            raise
        app.command(context_settings=_ANY_ARGS)(_dev_missing("demo"))
        app.command("dev", context_settings=_ANY_ARGS)(_dev_missing("dev"))
        return
    app.command()(demo)
    app.add_typer(dev_app, name="dev", help="Local Kafka broker and PostgreSQL (no Docker).")


_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _dev_missing(name: str) -> Callable[[], None]:
    def missing() -> None:
        raise OrderProcError(
            f"`orderproc {name}` is a development tool: it runs from a checkout of the "
            "orderproc repository (`make install`, then `make up` or `make demo`), "
            "not from the installed package"
        )

    missing.__name__ = name
    missing.__doc__ = "Development tool: run it from a checkout of the repository."
    return missing


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
