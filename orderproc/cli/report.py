"""``orderproc report``: write the DLQ audit report and print it as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orderproc.cli.common import echo, settings_with

app = typer.Typer()


@app.command()
def report(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Reports folder (default: ORDERPROC_REPORTS_DIR, else <data dir>/reports).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Count only from this ISO 8601 date-time on (default: all time)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Store URL (default: ORDERPROC_DATABASE_URL, else embedded SQLite)."),
    ] = None,
) -> None:
    """Write the DLQ report (Markdown, CSV, PNG chart) and print it as a table."""
    # Imported here so `orderproc --help` does not load SQLAlchemy and matplotlib.
    from orderproc.report import generate_report, parse_since
    from orderproc.report.render import format_table

    settings = settings_with(database_url=database_url)
    folder = out or settings.effective_reports_dir
    result, files = generate_report(
        settings.effective_database_url, folder, since=parse_since(since)
    )
    echo(format_table(result))
    echo("")
    echo(f"report: {files.markdown}")
    echo(f"csv:    {files.csv}")
    echo(f"chart:  {files.chart}")
