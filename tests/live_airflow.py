"""One real local Airflow per test session, for the tests that go through Airflow itself.

``live_airflow`` starts ``devstack.airflow.LocalAirflow`` (API server, scheduler,
DAG processor, triggerer; loopback only, a free port, ``AIRFLOW_HOME`` in a tmp folder)
with the project's DAGs and plugins, users ``admin``/``op``/``viewer`` whose passwords the
session wrote beforehand, the DLQ store on a PostgreSQL schema of its own (then, in a
second Airflow, the embedded SQLite store) and Kafka topics of its own. Its
``kafka_default`` connection goes through ``KafkaGate``, a loopback forwarder to the test
broker that a test can close to play a broker outage (the broker itself is shared: it is
never stopped). Everything started is stopped by pid at the end.

Registered as a plugin by ``tests/conftest.py``; started only when a test asks for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from confluent_kafka.admin import NewTopic

from devstack.airflow import LocalAirflow
from devstack.settings import DevstackSettings
from orderproc.config import RetryMode, Settings
from orderproc.kafka.clients import Admin
from tests.support import free_ports, migrated_schema

USERS = {"admin": "admin", "op": "op", "viewer": "viewer"}
"""User name -> SimpleAuthManager role."""
DAG_IDS = ("orders_dlq_drain", "orders_dlq_replay", "orders_dlq_report")


class KafkaGate:
    """A TCP forwarder on loopback to the broker's bootstrap address, which can be closed.

    Clients bootstrap through it and then talk to the broker's advertised address, so
    closing it is an outage for every client that starts while it is closed (a task run)
    and for nobody else.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.port = free_ports()[0]
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            # Closing alone would not wake the thread blocked in accept(), and the socket
            # would take one more connection; shutting it down first wakes it.
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with contextlib.suppress(OSError, ValueError):
        while True:
            ready, _, _ = select.select([a, b], [], [], 1.0)
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    for sock in (a, b):
        with contextlib.suppress(OSError):
            sock.close()


@dataclass
class LiveAirflow:
    """A running local Airflow and what a test needs to drive it."""

    url: str
    settings: Settings
    database_url: str
    passwords: dict[str, str]
    home: Path
    gate: KafkaGate
    local: LocalAirflow
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        """An API token of ``user`` (``POST /auth/token``, as scripts get one)."""
        if user not in self.tokens:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            self.tokens[user] = response.json()["access_token"]
        return self.tokens[user]

    def api(self, user: str | None = "op") -> httpx.Client:
        """A client of the API server, as ``user`` (None: anonymous)."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def trigger(self, dag_id: str, conf: dict[str, Any], user: str = "op") -> str:
        """Unpause ``dag_id`` and start a run; returns its run id."""
        with self.api(user) as api:
            assert api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).is_success
            response = api.post(
                f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
            )
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        with self.api() as api:
            response = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """The run once it has ended (bounded poll)."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run['state']}"
            time.sleep(0.5)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        with self.api() as api:
            response = api.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
            )
        assert response.status_code == 200, response.text
        return {ti["task_id"]: ti for ti in response.json()["task_instances"]}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of one task instance, first first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
        with self.api() as api:
            response = api.get(f"{path}/tries")
        assert response.status_code == 200, response.text
        return sorted(response.json()["task_instances"], key=lambda t: t["try_number"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A try's log as Airflow's UI shows it: one ``level logger: event`` per line."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/logs/{try_number}"
        )
        with self.api() as api:
            response = api.get(path, params={"full_content": "true"})
        assert response.status_code == 200, response.text
        content = response.json()["content"]
        lines = []
        for item in content:
            if isinstance(item, dict):
                level, logger = item.get("level", "-"), item.get("logger", "-")
                lines.append(f"{level} {logger}: {item.get('event', '')}")
                errors = [e for e in item.get("error_detail") or () if isinstance(e, dict)]
                lines += [f"  {e.get('exc_type')}: {e.get('exc_value')}" for e in errors]
            else:
                lines.append(str(item))
        return "\n".join(lines)


READY_WITHIN_S = 600.0
"""Bounds the session's Airflow start: about 30 s on an idle machine, minutes when the
machine is saturated (``ORDERPROC_TEST_LOAD``, other test runs beside this one)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that may start the session's Airflow gets its start within its bound (the
    suite's 300 s per test counts a fixture's set-up too)."""
    for item in items:
        if "live_airflow" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(READY_WITHIN_S + 300))


def _wait_for_dags(airflow: LiveAirflow, timeout_s: float = READY_WITHIN_S) -> None:
    """Until the DAG processor has serialized every project DAG (bounded poll)."""
    deadline = time.monotonic() + timeout_s
    with airflow.api("admin") as api:
        while True:
            found = {d: api.get(f"/api/v2/dags/{d}/details").status_code == 200 for d in DAG_IDS}
            if all(found.values()):
                return
            assert time.monotonic() < deadline, f"DAGs not parsed: {found}"
            time.sleep(1.0)


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def live_airflow(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    admin: Admin,
    postgres_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveAirflow]:
    """The session's local Airflow (started on first use, stopped at the end), once on a
    PostgreSQL store, then on the embedded one: no ``ORDERPROC_DATABASE_URL`` at all, the
    SQLite file under the data folder that ``make airflow`` uses on a fresh machine. One
    runs at a time (pytest ends the first before it starts the second); a test that needs
    only one says so with ``@pytest.mark.parametrize("live_airflow", [...], indirect=True)``.
    """
    uid = uuid.uuid4().hex[:10]
    folder = tmp_path_factory.mktemp("live-airflow")
    gate = KafkaGate(kafka_bootstrap)
    gate.up()
    cleanup = contextlib.ExitStack()
    database_url: str | None = None
    if request.param == "postgresql":
        database_url = cleanup.enter_context(migrated_schema(postgres_server_url, f"af_{uid}"))
    settings = Settings(
        bootstrap_servers=gate.address,
        orders_topic=f"orders-{uid}",
        dlq_topic=f"orders_dlq-{uid}",
        retry_topic_prefix=f"orders-{uid}.retry",
        consumer_group=f"order-group-{uid}",
        dlq_group=f"dlq-group-{uid}",
        topic_partitions=1,
        data_dir=folder / "data",
        database_url=database_url,
        retry_mode=RetryMode.NON_BLOCKING,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        backoff_jitter=0.0,
        poll_timeout_s=0.2,
    )
    topics = [settings.orders_topic, settings.dlq_topic, *settings.retry_topics]
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics], operation_timeout=30
    ).values():
        future.result()
    dev = DevstackSettings(devstack_dir=folder)
    passwords = {user: f"{user}-{uuid.uuid4().hex[:12]}" for user in USERS}
    home = folder / "airflow"
    (home / "config").mkdir(parents=True)
    (home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    local = LocalAirflow(settings, free_ports()[0], dev, users=USERS, env=_base_env(settings))
    local.paths.passwords_file.write_text(json.dumps(passwords))
    airflow = LiveAirflow(
        url=f"http://127.0.0.1:{local.port}",
        settings=settings,
        database_url=settings.effective_database_url,
        passwords=passwords,
        home=home,
        gate=gate,
        local=local,
    )
    try:
        local.prepare()
        local.start()
        local.wait_ready(READY_WITHIN_S)
        _wait_for_dags(airflow)
        yield airflow
    finally:
        local.stop()
        gate.down()
        with contextlib.suppress(Exception):
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                future.result()
        cleanup.close()


# Airflow's own way to change every task of a deployment (a cluster policy, read from
# $AIRFLOW_HOME/config/airflow_local_settings.py by the DAG processor): the DAGs' retries
# stay what they are, but a retried task waits seconds, not the minute it waits in
# production, so a test that lives through every try does not sleep minutes.
LOCAL_SETTINGS = """\
from datetime import timedelta


def task_policy(task):
    if task.retries:
        task.retry_delay = timedelta(seconds=2)
"""


def _base_env(settings: Settings) -> dict[str, str]:
    """This process's environment without its ``ORDERPROC_*`` and Airflow settings, plus
    the session's settings (the tasks read them; ``LocalAirflow`` adds Airflow's own)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ORDERPROC_", "AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_HOME"))
    }
    for name in ("orders_topic", "dlq_topic", "retry_topic_prefix", "consumer_group", "dlq_group"):
        keep[f"ORDERPROC_{name.upper()}"] = str(getattr(settings, name))
    keep["ORDERPROC_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    # Only the runs a test triggers: no scheduled drain or report turns up in the middle.
    keep["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    return keep
