"""Airflow plugin: the DLQ review page at ``/orderproc/`` and "DLQ review" in the Browse menu.

The page's HTML (templates, stylesheet, script) is in ``dlq_review/``; its routes are
``orderproc.airflow.review_app``. Airflow imports every Python file of the plugins folder
in each of its processes, task runs included, so this one stays light: the API server
builds the app on the page's first request.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/orderproc"
PAGES = Path(__file__).resolve().with_name("dlq_review")
"""The page's templates and assets."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class AppOnFirstRequest:
    """An ASGI app that builds the real one, ``module:factory(*args)``, when first called."""

    def __init__(self, factory: str, *args: Any) -> None:
        self.factory = factory
        self.args = args
        self._app: App | None = None
        self._lock = threading.Lock()

    def build(self) -> App:
        with self._lock:
            if self._app is None:
                module, _, name = self.factory.partition(":")
                self._app = getattr(importlib.import_module(module), name)(*self.args)
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self._app or self.build())(scope, receive, send)


class DlqReviewPlugin(AirflowPlugin):
    """Review dead-lettered orders, correct, approve and replay them inside Airflow."""

    name = "orderproc_dlq_review"
    fastapi_apps = [
        {
            "app": AppOnFirstRequest("orderproc.airflow.review_app:create_app", PAGES),
            "url_prefix": URL_PREFIX,
            "name": "orderproc DLQ review",
        }
    ]
    external_views = [
        {
            "name": "DLQ review",
            "href": f"{URL_PREFIX}/",  # the slash matters: /orderproc alone is Airflow's UI
            "destination": "nav",
            "category": "browse",
            "url_route": "dlq-review",  # shown inside Airflow's UI, at /plugin/dlq-review
        }
    ]
