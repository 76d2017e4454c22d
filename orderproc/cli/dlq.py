"""``orderproc dlq ...``: watch the dead-letter queue (review commands register here too)."""

from __future__ import annotations

from typing import Annotated

import typer

from orderproc.cli.common import (
    echo,
    install_stop_handlers,
    serving_metrics,
    settings_with,
    setup_logging,
)

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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve /metrics and /healthz, and export the drain's and the review backlog "
            "(read every ORDERPROC_MONITOR_INTERVAL_S; default port: ORDERPROC_METRICS_PORT).",
        ),
    ] = None,
) -> None:
    """Print each DLQ event as it arrives (``--- DLQ EVENT ---`` + JSON)."""
    from orderproc.dlq.monitor import DlqMonitor
    from orderproc.metrics import Health, MonitorMetrics, worker_registry

    settings = settings_with(dlq_group=group, metrics_port=metrics_port)
    setup_logging(settings, None, "WARNING")
    health = Health()
    metrics = None
    if settings.metrics_port:
        metrics = MonitorMetrics(worker_registry("dlq-monitor", health), group=settings.dlq_group)
    monitor = DlqMonitor(
        settings,
        json_output=json_output,
        from_beginning=from_beginning,
        echo=echo,
        metrics=metrics,
        health=health,
    )
    install_stop_handlers(monitor.stop)
    if metrics is None:
        monitor.run(max_messages=max_messages, idle_exit_s=idle_exit)
        return
    with serving_metrics(settings, metrics.registry, health):
        monitor.run(max_messages=max_messages, idle_exit_s=idle_exit)
