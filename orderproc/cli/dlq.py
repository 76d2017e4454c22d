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
from orderproc.models import DEFAULT_REPLAY_WAIT_S

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


@app.command()
def drain(
    max_messages: Annotated[int | None, typer.Option(min=1, help="Stop after this many.")] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for Kafka before failing.")
    ] = 10.0,
) -> None:
    """Store the DLQ records not yet drained (what the orders_dlq_drain DAG runs)."""
    from orderproc.cli.review import default_actor
    from orderproc.dlq.drain import run_drain

    settings = settings_with()
    setup_logging(settings, None, "WARNING")
    result = run_drain(settings, max_messages=max_messages, metadata_timeout_s=timeout,
                       actor=default_actor())  # fmt: skip
    echo(
        f"drained {result.consumed} record(s): {result.inserted} new failure(s), "
        f"{result.copies} more copies of known ones, {result.duplicates} read again; "
        f"caught up: {'yes' if result.caught_up else 'no'}"
    )


@app.command()
def replay(
    event_id: Annotated[list[int] | None, typer.Option("--event-id", help="Repeatable.")] = None,
    order_id: Annotated[list[str] | None, typer.Option("--order-id", help="Repeatable.")] = None,
    reason: Annotated[list[str] | None, typer.Option("--reason", help="Repeatable.")] = None,
    category: Annotated[list[str] | None, typer.Option("--category", help="Repeatable.")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before (RFC 3339).")] = None,
    max_messages: Annotated[int, typer.Option()] = 100,
    rate: Annotated[float, typer.Option(help="Records per second (0: unthrottled).")] = 0.0,
    max_replays: Annotated[int | None, typer.Option(help="Park rows replayed this often.")] = None,
    publish: Annotated[
        bool, typer.Option("--publish/--dry-run", help="Publish, or only show the plan.")
    ] = False,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for a replay that is running.")
    ] = DEFAULT_REPLAY_WAIT_S,
    replay_id: Annotated[str | None, typer.Option(help="Lineage id (default: new).")] = None,
) -> None:
    """Replay approved DLQ rows to the orders topic (what the orders_dlq_replay DAG runs);
    a dry run unless --publish."""
    from orderproc.airflow.params import ReplayParams, replay_request
    from orderproc.cli.review import default_actor
    from orderproc.dlq.replay import replay_id_for, replay_with_settings
    from orderproc.dlq.summary import summary_markdown

    form = {
        "event_ids": event_id, "order_ids": order_id, "reasons": reason,
        "categories": category, "since": since, "until": until, "max_messages": max_messages,
        "rate_per_sec": rate, "dry_run": not publish, "max_replays": max_replays,
    }  # fmt: skip
    params = ReplayParams.parse({k: v for k, v in form.items() if v is not None})
    request = replay_request(params).model_copy(update={"wait_s": wait})
    settings = settings_with()
    setup_logging(settings, None, "WARNING")
    result = replay_with_settings(settings, request, replay_id=replay_id or replay_id_for(None),
                                  actor=default_actor())  # fmt: skip
    echo(summary_markdown(result.to_dict()))
