"""Where the DAGs find the store: the ``orderproc_db`` connection, else the settings."""

from __future__ import annotations

import json

import pytest

from orderproc.airflow.connections import database_url
from orderproc.config import Settings

pytestmark = pytest.mark.unit


def test_a_postgres_connection_becomes_a_psycopg_url_with_libpq_extras_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {
        "conn_type": "postgres",
        "host": "db.example",
        "port": 5433,
        "login": "orderproc",
        "password": "p@ss:word",
        "schema": "orders",
        "extra": {"options": "-csearch_path=s1", "sslmode": "require", "cursor": "dictcursor"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", json.dumps(conn))

    assert database_url() == (
        "postgresql+psycopg://orderproc:p%40ss%3Aword@db.example:5433/orders"
        "?options=-csearch_path%3Ds1&sslmode=require"
    )


@pytest.mark.parametrize(
    "value",
    [
        "sqlite:////var/lib/orderproc/store.db",
        '{"conn_type": "sqlite", "host": "/var/lib/orderproc/store.db"}',
    ],
)
def test_a_sqlite_connection_keeps_its_path(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", value)

    assert database_url() == "sqlite:////var/lib/orderproc/store.db"


def test_without_the_connection_the_settings_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ORDERPROC_DB", raising=False)
    settings = Settings(database_url="postgresql://u:p@elsewhere/db")

    assert database_url(settings=settings) == "postgresql://u:p@elsewhere/db"
