"""The local Airflow's environment (``make airflow``): sized to the machine, loopback only,
the users it is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.airflow import AirflowPaths, airflow_env, parallelism
from orderproc.config import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("cores", "slots"), [(1, 2), (2, 2), (8, 8), (None, 2)])
def test_task_slots_follow_the_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cores: int | None, slots: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)

    env = airflow_env(Settings(), AirflowPaths(tmp_path), 8080, {})

    # LocalExecutor forks this many workers at start: Airflow's default is 32.
    assert parallelism() == slots
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(slots)
    assert env["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "1"


def test_the_local_airflow_listens_on_loopback_with_the_users_it_is_given(tmp_path: Path) -> None:
    env = airflow_env(
        Settings(database_url="sqlite:////tmp/x.db"),
        AirflowPaths(tmp_path),
        18080,
        {"PATH": "/bin", "KEEP": "me"},
        users={"admin": "admin", "op": "op", "viewer": "viewer"},
    )

    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,op:op,viewer:viewer"
    assert env["KEEP"] == "me"
    assert json.loads(env["AIRFLOW_CONN_ORDERPROC_DB"])["host"] == "/tmp/x.db"
    default = airflow_env(Settings(), AirflowPaths(tmp_path), 8080, {})
    assert default["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
