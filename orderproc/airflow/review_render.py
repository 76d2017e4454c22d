"""How the review page answers: its templates (autoescaped), a page rendered for the
logged-in user, a redirect back after an action, and an expected failure in one line.

``orderproc.airflow.review_app`` holds the routes; this is what they answer with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from orderproc.airflow.rest import AirflowApiError
from orderproc.airflow.review_auth import form_token, may_act
from orderproc.clock import utcnow
from orderproc.dlq.audit import AuditAction
from orderproc.dlq.plan import PlanAction
from orderproc.dlq.runs import RowOutcome, RunState
from orderproc.errors import (
    ConflictError,
    RegistryUnavailableError,
    StoreError,
    UnknownEventError,
)
from orderproc.models import DlqStatus
from orderproc.report.render import fmt_age
from orderproc.store.engine import store_error

DONE = {
    "approved": "Approved: the row will be replayed by the next replay of approved rows.",
    "rejected": "Rejected: the row will never be replayed.",
    "edited": "Correction saved; the original order is kept beside it.",
    "bulk-approved": "Approved {n} row(s).",
    "bulk-rejected": "Rejected {n} row(s).",
}
"""What a page says was done, by the code a redirect after an action carries."""
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    ),
}


def templates(folder: Path) -> Environment:
    """The plugin's templates, autoescaped, with the ``age`` filter and the stored words
    (``PlanAction``, ``DlqStatus``, ``RunState``, ``RowOutcome``, ``AuditAction``)."""
    env = Environment(
        loader=FileSystemLoader(folder),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    env.filters["age"] = lambda at: fmt_age(utcnow() - at) if at else "n/a"
    for words in (PlanAction, DlqStatus, RunState, RowOutcome, AuditAction):
        env.globals[words.__name__] = words
    return env


def _env(request: Request) -> Environment:
    env: Environment = request.app.state.templates
    return env


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def page(
    request: Request,
    user: BaseUser,
    template: str,
    *,
    status_code: int = 200,
    said: str | None = None,
    **values: Any,
) -> HTMLResponse:
    """Render ``template``; what was done comes from ``said`` or the redirect's code."""
    act = may_act(user)
    code = DONE.get(request.query_params.get("done", ""))
    done = said or (code.format(n=_count(request)) if code else None)
    body = (
        _env(request)
        .get_template(template)
        .render(
            base=_base(request),
            user=user.get_name(),
            may_act=act,
            csrf=form_token(user) if act else "",
            done=done,
            **values,
        )
    )
    return HTMLResponse(body, status_code=status_code, headers=HEADERS)


def _count(request: Request) -> int:
    n = request.query_params.get("n", "")
    return int(n) if n.isdigit() else 0


def back(request: Request, path: str, query: str = "", **done: Any) -> RedirectResponse:
    """See other: ``path`` of this app, with ``query`` and what was done."""
    extra = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in done.items())
    qs = "&".join(part for part in (query, extra) if part)
    url = _base(request) + path + (f"?{qs}" if qs else "")
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


async def refused(request: Request, exc: Exception) -> Response:
    """An expected failure (bad filter, refused action, Airflow said no) in one line: an
    error page for a browser, JSON for anything else."""
    code = status.HTTP_400_BAD_REQUEST
    if isinstance(exc, AirflowApiError):
        code = status.HTTP_502_BAD_GATEWAY
    elif isinstance(exc, StoreError | RegistryUnavailableError):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif isinstance(exc, UnknownEventError):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, ConflictError):
        code = status.HTTP_409_CONFLICT
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": str(exc)}, status_code=code)
    body = (
        _env(request)
        .get_template("error.html")
        .render(base=_base(request), message=str(exc), status_code=code)
    )
    return HTMLResponse(body, status_code=code, headers=HEADERS)


async def store_failed(request: Request, exc: Exception) -> Response:
    """The DLQ store failed: one line (no password, no traceback), 503."""
    return await refused(request, store_error("the DLQ store failed", exc))
