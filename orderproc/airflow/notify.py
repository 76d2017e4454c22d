"""Tell someone when a DAG's task has failed for good: ``FailureNotifier``.

Every orderproc DAG sets it as ``on_failure_callback`` (``default_args``): Airflow calls it
once a task has failed its last try (not on each retry). It logs one line and, when
``ORDERPROC_ALERT_WEBHOOK_URL`` is set, posts that line as ``{"text": ...}`` to it: the
incoming-webhook format of Slack, Mattermost, Rocket.Chat and Google Chat. Email instead
(or as well): Airflow's SMTP provider has a notifier of its own (README, "Operating it").

Light to import (DAG files use it while they are parsed): the settings are read when a
failure is told, not before. A notification that cannot be sent is logged, never raised:
it must not hide the failure it was about.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

Post = Callable[[str, bytes], None]


def post_json(url: str, body: bytes) -> None:
    """POST ``body`` as JSON to ``url`` (10 s at most)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def failure_text(context: Mapping[str, Any]) -> str:
    """One line: which task of which run failed, after how many tries, and why."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or "?"
    task_id = getattr(ti, "task_id", None) or "?"
    run_id = getattr(ti, "run_id", None) or context.get("run_id") or "?"
    tries = getattr(ti, "try_number", None)
    error = context.get("exception")
    why = (str(error).strip().splitlines() or [type(error).__name__])[0] if error else "failed"
    after = f" after {tries} tries" if tries else ""
    return f"orderproc: {dag_id}.{task_id} failed{after} (run {run_id}): {why[:500]}"


class FailureNotifier(BaseNotifier):
    """Logs a task's final failure and posts it to the alert webhook, if one is set."""

    def __init__(self, *, webhook_url: str | None = None, post: Post = post_json) -> None:
        super().__init__()
        self.webhook_url = webhook_url
        self._post = post

    def notify(self, context: Mapping[str, Any]) -> None:
        text = failure_text(context)
        log.error("%s", text)
        url = self.webhook_url or _configured_url()
        if not url:
            return
        try:
            self._post(url, json.dumps({"text": text}).encode())
        except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
            log.error("could not post the failure to the alert webhook: %s", exc)


def _configured_url() -> str | None:
    from orderproc.config import get_settings

    secret = get_settings().alert_webhook_url
    return secret.get_secret_value() if secret else None


def failure_notifier() -> FailureNotifier:
    """What the DAGs put in ``default_args["on_failure_callback"]``."""
    return FailureNotifier()
