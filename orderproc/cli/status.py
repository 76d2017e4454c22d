"""``orderproc status``: one screen (or ``--json``) saying how far behind the system is."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from orderproc.cli.common import settings_with
from orderproc.models import REVIEW_SLO_HOURS

app = typer.Typer()


@app.command()
def status(
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            help="A worker's metrics URL (http://host:9108); repeat for each worker.",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    window: Annotated[
        float,
        typer.Option(min=0, max=60, help="Seconds between the two looks at the groups (0: one)."),
    ] = 2.0,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=120, help="Seconds to wait for each answer.")
    ] = 5.0,
    review_slo_hours: Annotated[
        float,
        typer.Option(min=0, help="An unresolved failure older than this needs attention."),
    ] = REVIEW_SLO_HOURS,
) -> None:
    """Broker, topics, lag of every group, dead letters not drained, review backlog, last
    drain/report/replay and, with --metrics, each worker's health and flood breaker.

    Exit 0: all is well; 1: something needs attention (listed first); 2: it could not
    look at the broker or the store.
    """
    # Imported here so `orderproc --help` stays fast.
    from orderproc.status import collect
    from orderproc.status.render import render
    from orderproc.status.workers import base_url

    urls = [base_url(u) for u in metrics or []]
    settings = settings_with()
    found = collect(
        settings,
        metrics_urls=urls,
        window_s=window,
        timeout_s=timeout,
        review_slo_hours=review_slo_hours,
    )
    if json_output:
        print(json.dumps(found.to_dict(), indent=2))
    else:
        print(render(found))
    sys.stdout.flush()
    raise typer.Exit(found.exit_code)
