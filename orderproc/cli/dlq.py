"""``orderproc dlq ...``: watch the dead-letter queue (review commands register here too)."""

from __future__ import annotations

from typing import Annotated

import typer

from orderproc.cli.common import echo, install_stop_handlers, settings_with, setup_logging

app = typer.Typer(no_args_is_help=True)


@app.command()
def tail(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    max_messages: Annotated[int | None, typer.Option(min=1)] = None,
    idle_exit: Annotated[float | None, typer.Option(min=0)] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: dlq-group).")] = None,
) -> None:
    """Print each DLQ event as it arrives (``--- DLQ EVENT ---`` + JSON)."""
    from orderproc.dlq.monitor import DlqMonitor

    settings = settings_with(dlq_group=group)
    setup_logging(settings, None, "WARNING")
    monitor = DlqMonitor(
        settings, json_output=json_output, from_beginning=from_beginning, echo=echo
    )
    install_stop_handlers(monitor.stop)
    monitor.run(max_messages=max_messages, idle_exit_s=idle_exit)
