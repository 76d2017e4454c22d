"""The DLQ audit report: aggregate the store, render it, write Markdown, CSV and a PNG chart.

``generate_report`` is what ``orderproc report`` and the ``orders_dlq_report`` DAG
call. The numbers are defined in ``orderproc.report.aggregate``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from orderproc.clock import as_utc
from orderproc.errors import ConfigError
from orderproc.report.aggregate import DlqReport, build_report
from orderproc.report.chart import draw_chart
from orderproc.report.render import csv_rows, to_markdown
from orderproc.store.engine import open_engine, store_error

FOLDER_PREFIX = "dlq-report-"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
"""Each report's folder is ``FOLDER_PREFIX`` + its UTC time in ``STAMP_FORMAT``."""


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where ``write_report`` put one report."""

    folder: Path
    markdown: Path
    csv: Path
    chart: Path

    def as_dict(self) -> dict[str, str]:
        """The paths as strings (an XCom-friendly return value)."""
        return {
            "folder": str(self.folder),
            "markdown": str(self.markdown),
            "csv": str(self.csv),
            "chart": str(self.chart),
        }


def parse_since(text: str | None) -> datetime | None:
    """An ISO 8601 date or date-time (UTC when no offset is given); empty means all time.

    Raises:
        ConfigError: the text is not an ISO 8601 date or date-time.
    """
    if not text or not text.strip():
        return None
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise ConfigError(f"since: expected an ISO 8601 date-time, got {text!r}") from exc


def generate_report(
    database_url: str, folder: Path, *, since: datetime | None = None, now: datetime | None = None
) -> tuple[DlqReport, ReportFiles]:
    """Build the report from the store at ``database_url`` and write it under ``folder``.

    Raises:
        StoreError: the store cannot be read (unreachable, or not migrated yet).
    """
    try:
        with open_engine(database_url) as engine:
            report = build_report(engine, now=now, since=since)
    except SQLAlchemyError as exc:
        raise store_error("could not read the DLQ store", exc) from exc
    return report, write_report(report, folder)


def write_report(report: DlqReport, folder: Path) -> ReportFiles:
    """Write ``report.md``, ``report.csv`` and ``chart.png`` into a new subfolder.

    The subfolder is ``dlq-report-<UTC time>`` under ``folder``, so hourly reports
    pile up side by side and a rerun for the same time overwrites its own files.
    """
    target = Path(folder) / f"{FOLDER_PREFIX}{report.generated_at.strftime(STAMP_FORMAT)}"
    target.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(target, target / "report.md", target / "report.csv", target / "chart.png")
    draw_chart(report, files.chart)
    files.markdown.write_text(to_markdown(report, files.chart.name), encoding="utf-8")
    with files.csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("section", "key", "metric", "value"))
        writer.writerows(("" if v is None else v for v in row) for row in csv_rows(report))
    return files
