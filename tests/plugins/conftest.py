"""The review page inside Airflow's own API app, in this process (no server, no browser).

``review`` builds Airflow's API app (``create_app(apps="core")``) once per module, with
the project's plugins folder and SimpleAuthManager users ``admin``, ``op`` (role op) and
``viewer`` whose passwords this module wrote; each test gets a DLQ store, once on its own
PostgreSQL schema and once in its own SQLite file, given to Airflow as the ``orderproc_db``
connection.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from devstack.airflow import database_connection
from orderproc.dlq.store import DlqStore

USERS = {"admin": "admin", "op": "op", "viewer": "viewer"}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Review:
    """A client of the in-process API server, and the users' tokens."""

    client: Any  # fastapi.testclient.TestClient
    passwords: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, user: str) -> dict[str, str]:
        """``Authorization`` header of ``user`` (a token from ``POST /auth/token``)."""
        if user not in self.tokens:
            response = self.client.post(
                "/auth/token", json={"username": user, "password": self.passwords[user]}
            )
            assert response.status_code == 201, response.text
            self.tokens[user] = response.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, path: str, user: str | None = "op", **kwargs: Any) -> httpx.Response:
        headers = {**(self.auth(user) if user else {}), **kwargs.pop("headers", {})}
        response: httpx.Response = self.client.get(path, headers=headers, **kwargs)
        return response

    def post(
        self, path: str, data: Any = None, user: str | None = "op", **kwargs: Any
    ) -> httpx.Response:
        headers = {**(self.auth(user) if user else {}), **kwargs.pop("headers", {})}
        response: httpx.Response = self.client.post(
            path, data=data, headers=headers, follow_redirects=False, **kwargs
        )
        return response

    def csrf(self, user: str = "op") -> str:
        """The CSRF token the backlog page gives ``user``'s forms."""
        page = self.get("/orderproc/", user)
        assert page.status_code == 200, page.text
        match = CSRF_INPUT.search(page.text)
        assert match, "the page carries no CSRF token"
        return match.group(1)

    def act(
        self, path: str, data: dict[str, Any] | None = None, user: str = "op"
    ) -> httpx.Response:
        """A POST as the page's own form sends it (with the user's CSRF token)."""
        return self.post(path, {**(data or {}), "csrf_token": self.csrf(user)}, user)


@pytest.fixture(scope="module")
def review_server(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    from fastapi.testclient import TestClient

    passwords = {user: f"{user}-{uuid.uuid4().hex[:12]}" for user in USERS}
    file = Path(tmp_path_factory.mktemp("auth")) / "passwords.json"
    file.write_text(json.dumps(passwords))
    values = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(file),
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        from airflow.api_fastapi.app import create_app

        with TestClient(create_app(apps="core")) as client:
            yield Review(client, passwords)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def review(review_server: Review, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Review]:
    """The API server, its review page on this test's store: an empty PostgreSQL schema,
    then an empty SQLite file (the embedded store ``make demo`` and ``make airflow`` use)."""
    from orderproc.airflow.review_app import close_stores

    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", database_connection(db_url))
    yield review_server
    close_stores()


@pytest.fixture
def store(engine: Engine) -> DlqStore:
    return DlqStore(engine)
