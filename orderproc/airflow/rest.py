"""Airflow's public REST API, called as a user: trigger a DAG run, read its state.

The review page triggers ``orders_dlq_replay`` through the same endpoint as Airflow's
own trigger form, with a short-lived token of the acting user: Airflow then checks
that user's permissions, validates the conf against the DAG's params (a 400 names the
parameter), records the user as the run's ``triggering_user_name`` and logs the event.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from orderproc.errors import OrderProcError

TERMINAL_STATES = ("success", "failed")


class AirflowApiError(OrderProcError):
    """Airflow's REST API refused a request or did not answer."""


def api_base_url() -> str:
    """Where this Airflow's API server answers, from Airflow's own configuration."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or ""
    if base:
        return str(base).rstrip("/")
    host = conf.get("api", "host", fallback="127.0.0.1") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    return f"http://{host}:{conf.getint('api', 'port', fallback=8080)}"


class AirflowRest:
    """A few calls of Airflow's REST API with one user's token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.timeout_s = timeout_s

    def trigger(self, dag_id: str, conf: dict[str, Any], *, unpause: bool = True) -> str:
        """Start a run of ``dag_id`` now; returns its run id.

        ``unpause`` does what Airflow's trigger form does by default: a run of a paused
        DAG would wait until someone unpauses it.
        """
        dag = quote(dag_id, safe="")
        if unpause:
            self._call("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
        run = self._call(
            "POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf}
        )
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run as the API shows it (``state``, ``start_date``, ...)."""
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        return self._call("GET", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as client:
                response = client.request(method, path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise AirflowApiError(
                f"Airflow's API at {self.base_url} did not answer: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise AirflowApiError(
                f"Airflow refused {method} {path}: HTTP {response.status_code} {_detail(response)}"
            )
        data = response.json()
        if not isinstance(data, dict):
            raise AirflowApiError(f"Airflow answered {method} {path} with {type(data).__name__}")
        return data


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else body
    return str(detail)[:500] if detail is not None else ""
