"""Every DAG in ``dags/`` imports cleanly and is tagged, documented and retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXPECTED_DAG_IDS = {"orders_dlq_drain", "orders_dlq_report", "orders_dlq_replay"}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}


def test_the_project_dags_are_all_there(dagbag: Any) -> None:
    assert set(dagbag.dag_ids) >= EXPECTED_DAG_IDS


def test_every_dag_is_tagged_documented_and_retried(dagbag: Any) -> None:
    problems = {dag_id: _problems(dag) for dag_id, dag in dagbag.dags.items()}
    assert {dag_id: found for dag_id, found in problems.items() if found} == {}
    assert problems  # the check above ran over real DAGs


def _problems(dag: Any) -> list[str]:
    found = []
    if not dag.tags:
        found.append("no tags")
    if not (dag.doc_md or "").strip():
        found.append("no doc_md")
    if (dag.default_args or {}).get("retries", 0) < 1:
        found.append("default_args has no retries >= 1")
    found += [f"task {t.task_id} has retries={t.retries}" for t in dag.tasks if t.retries < 1]
    return found
