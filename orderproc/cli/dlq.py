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
from orderproc.models import DEFAULT_REPLAY_WAIT_S, ReplayOptions

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


def _about(option: str) -> str:
    """An option's help: the replay option's own description and default (one source:
    ``ReplayOptions``, which the trigger form is derived from too)."""
    field = ReplayOptions.model_fields[option]
    return f"{field.title}: {field.description} [default: {field.default}]"


@app.command()
def replay(
    event_id: Annotated[list[int] | None, typer.Option("--event-id", help="Repeatable.")] = None,
    order_id: Annotated[list[str] | None, typer.Option("--order-id", help="Repeatable.")] = None,
    reason: Annotated[list[str] | None, typer.Option("--reason", help="Repeatable.")] = None,
    category: Annotated[list[str] | None, typer.Option("--category", help="Repeatable.")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered at or after (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before (RFC 3339).")] = None,
    max_messages: Annotated[int | None, typer.Option(help=_about("max_messages"))] = None,
    rate: Annotated[float | None, typer.Option(help=_about("rate_per_sec"))] = None,
    max_replays: Annotated[int | None, typer.Option(help=_about("max_replays"))] = None,
    canary: Annotated[str | None, typer.Option(help=_about("canary"))] = None,
    step_rows: Annotated[int | None, typer.Option(help=_about("step_rows"))] = None,
    pause_at: Annotated[float | None, typer.Option(help=_about("pause_at_percent"))] = None,
    outcome_timeout: Annotated[float | None, typer.Option(help=_about("outcome_timeout_s"))] = None,
    publish: Annotated[
        bool, typer.Option("--publish/--dry-run", help="Publish, or only show the plan.")
    ] = False,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for a replay that is running.")
    ] = DEFAULT_REPLAY_WAIT_S,
    replay_id: Annotated[str | None, typer.Option(help="Lineage id (default: new).")] = None,
) -> None:
    """Replay approved DLQ rows to the orders topic as the orders_dlq_replay DAG does: a
    canary, its outcomes awaited here (the live consumer must run), then the rest in
    steps; it pauses (exit 1) when replayed orders fail again. A dry run unless --publish.
    Defaults and bounds are the trigger form's."""
    from orderproc.airflow.params import ReplayParams, replay_request
    from orderproc.cli.review import default_actor
    from orderproc.dlq.replay import clients_for, replay_id_for
    from orderproc.dlq.steps import replay_watched
    from orderproc.dlq.store import DlqStore
    from orderproc.dlq.summary import run_markdown, run_report, said, summary_markdown
    from orderproc.errors import ReplayPausedError
    from orderproc.store.engine import open_engine

    form = {
        "event_ids": event_id, "order_ids": order_id, "reasons": reason,
        "categories": category, "since": since, "until": until, "max_messages": max_messages,
        "rate_per_sec": rate, "dry_run": not publish, "max_replays": max_replays,
        "canary": canary, "step_rows": step_rows, "pause_at_percent": pause_at,
        "outcome_timeout_s": outcome_timeout,
    }  # fmt: skip
    params = ReplayParams.parse({k: v for k, v in form.items() if v is not None})
    request = replay_request(params).model_copy(update={"wait_s": wait})
    settings = settings_with()
    setup_logging(settings, None, "WARNING")
    run_id = replay_id or replay_id_for(None)
    with open_engine(settings.effective_database_url) as engine:
        store = DlqStore(engine)
        result = replay_watched(store, request, clients_for(settings), replay_id=run_id,
                                actor=default_actor())  # fmt: skip
        report = run_report(store, run_id)
    if report is None:
        echo(summary_markdown(result.to_dict()))
        return
    echo(run_markdown(report, said(result.to_dict())[1:]))
    if report.run.failed:
        raise ReplayPausedError(report.run.said or f"replay {run_id} {report.run.state}")
