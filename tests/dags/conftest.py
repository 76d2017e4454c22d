"""Running the project's DAGs with ``dag.test()``: metadata DB, connections, settings.

``tests/conftest.py`` points ``AIRFLOW_HOME``, the metadata DB and the DAGs folder at a
scratch directory (``pytest_configure``, before Airflow is imported) and migrates the
metadata DB once per session (``airflow_db``); here each test gets its own connections and
topics through environment variables, the way a deployment provides them.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.airflow import database_connection
from orderproc.config import Settings, get_settings

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def load_dag(airflow_db: None) -> Callable[[str], Any]:
    """Parse one DAG file of ``dags/`` (named after its dag id) and return the DAG."""

    def load(dag_id: str) -> Any:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
        assert bag.import_errors == {}
        return bag.dags[dag_id]

    return load


@pytest.fixture
def kafka_connection(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set ``kafka_default`` (to the test broker by default; call again to repoint it)."""

    def point_at(bootstrap: str, **extra: Any) -> None:
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": "airflow-dag-tests",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
        monkeypatch.setenv(
            "AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps({"conn_type": "kafka", "extra": conf})
        )

    point_at(kafka_bootstrap)
    return point_at


@pytest.fixture
def dag_settings(
    make_settings: Callable[..., Settings],
    db_url: str,
    kafka_connection: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Settings]:
    """This test's topics as ``ORDERPROC_*`` variables; the store (PostgreSQL, then SQLite)
    as ``orderproc_db``."""
    settings = make_settings(partitions=2, database_url=db_url)
    for name in ("bootstrap_servers", "orders_topic", "dlq_topic", "dlq_group", "consumer_group"):
        monkeypatch.setenv(f"ORDERPROC_{name.upper()}", str(getattr(settings, name)))
    # No ORDERPROC_DATABASE_URL: the DAGs must find the store through the connection.
    monkeypatch.delenv("ORDERPROC_DATABASE_URL", raising=False)
    monkeypatch.setenv("ORDERPROC_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", database_connection(db_url))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


class Webhook:
    """A chat webhook on a free loopback port: what was posted to it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                webhook.bodies.append(self.rfile.read(size))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/orderproc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [str(json.loads(b)["text"]) for b in self.bodies]


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """``ORDERPROC_ALERT_WEBHOOK_URL`` pointing at a ``Webhook`` of this test's own."""
    hook = Webhook()
    monkeypatch.setenv("ORDERPROC_ALERT_WEBHOOK_URL", hook.url)
    get_settings.cache_clear()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()
    get_settings.cache_clear()
