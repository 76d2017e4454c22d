"""``orders_dlq_report`` run with ``dag.test()`` against PostgreSQL and a known input.

The store is found the way a deployment provides it: through the ``orderproc_db``
connection, here built by the same function ``make airflow`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from devstack.airflow import database_connection
from orderproc.config import get_settings

pytestmark = pytest.mark.integration

CsvReader = Callable[[Path], dict[tuple[str, str, str], str]]


@pytest.fixture
def report_dag(load_dag: Callable[[str], Any]) -> Any:
    return load_dag("orders_dlq_report")


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """The run's reports folder (the DAG creates it)."""
    return tmp_path / "reports"


@pytest.fixture
def store(
    db_url: str,
    engine: Engine,
    known_input: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Engine]:
    """The known input in this test's store (PostgreSQL, then SQLite), as connection
    ``orderproc_db``."""
    known_input.seed(engine)
    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", database_connection(db_url))
    # Not the settings' store: the DAG must find the data through the connection.
    monkeypatch.delenv("ORDERPROC_DATABASE_URL", raising=False)
    monkeypatch.setenv("ORDERPROC_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield engine
    get_settings.cache_clear()


def test_report_run_writes_files_with_the_known_numbers(
    report_dag: Any,
    store: Engine,
    reports: Path,
    known_input: Any,
    read_report_csv: CsvReader,
    table_rows: Callable[[str], list[list[str]]],
) -> None:
    dag_run = report_dag.test(run_conf={"reports_dir": str(reports), "slo_hours": None})

    assert dag_run.state == "success"
    (folder,) = reports.glob("dlq-report-*")
    assert {p.name for p in folder.iterdir()} == {"report.md", "report.csv", "chart.png"}
    values = read_report_csv(folder / "report.csv")
    assert values["inflow_by_reason", known_input.high, "count"] == "7"
    assert values["prices", "failed", "mean"] == "200.0"
    assert values["prices", "processed", "median"] == "30.0"
    assert values["backlog", "new", "count"] == "1"
    assert values["replay", "(all)", "success_rate"] == "0.5"
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert ["replay success rate", "50.0%"] in table_rows(markdown)
    assert (folder / "chart.png").read_bytes().startswith(b"\x89PNG")


def test_since_param_limits_the_window(
    report_dag: Any, store: Engine, reports: Path, known_input: Any, read_report_csv: CsvReader
) -> None:
    conf = {"reports_dir": str(reports), "since": "2026-03-01T09:30:00+00:00", "slo_hours": None}
    dag_run = report_dag.test(run_conf=conf)

    assert dag_run.state == "success"
    (csv_path,) = reports.glob("dlq-report-*/report.csv")
    values = read_report_csv(csv_path)
    assert values["inflow_by_reason", known_input.high, "count"] == "4"
    assert values["replay", "(all)", "replayed"] == "3"
    assert values["replay", "(all)", "succeeded"] == "1"


def test_a_since_that_is_not_a_date_is_refused_before_anything_runs(
    report_dag: Any, store: Engine, reports: Path
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="'yesterday' is not a 'date-time'"):
        report_dag.test(run_conf={"reports_dir": str(reports), "since": "yesterday"})
    assert not reports.exists()


def test_a_since_the_form_accepts_but_the_task_cannot_use_fails_without_retries(
    report_dag: Any, store: Engine, reports: Path
) -> None:
    # RFC 3339 allows it; in UTC it would be before year 1.
    dag_run = report_dag.test(
        run_conf={"reports_dir": str(reports), "since": "0001-01-01T00:00:00+01:00"}
    )

    assert dag_run.state == "failed"
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 1  # AirflowFailException: a bad param is not retried
    assert not reports.exists()


def test_a_backlog_older_than_the_slo_fails_the_run_after_writing_the_report(
    report_dag: Any, store: Engine, reports: Path, webhook: Any
) -> None:
    # The known input's oldest unresolved failure dates from March 2026: far over 24 h.
    dag_run = report_dag.test(run_conf={"reports_dir": str(reports)})

    assert dag_run.state == "failed"
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 1  # a missed SLO is not retried: the next hourly run says it again
    (folder,) = reports.glob("dlq-report-*")
    assert (folder / "report.md").exists() and (folder / "chart.png").exists()
    (told,) = webhook.texts()
    assert told.startswith("orderproc: orders_dlq_report.write_dlq_report failed")
    assert "review SLO missed: the oldest unresolved failure has waited" in told
    assert "over 24 h" in told
