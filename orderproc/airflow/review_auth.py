"""Who may use the review page (``review_app``), through Airflow's own auth dependencies,
and its CSRF check.

Airflow does not authenticate a plugin's app: every route depends on ``CanView`` (read
``orders_dlq_replay``'s runs: a viewer may) or ``CanAct`` (trigger them: a viewer may
not), which resolve the user from the ``Authorization`` header or Airflow's ``_token``
cookie. Acting routes also depend on ``CsrfChecked``, after ``CanAct`` so a viewer always
gets "Forbidden": Airflow's login cookie is readable by scripts and carries no SameSite
attribute, so another site (or another port of the same host) could otherwise post a
form with it. The check wants same-origin fetch metadata and a form token bound to the
user (``orderproc.airflow.review.csrf_token``) signed with a key derived from Airflow's
``[api] secret_key``, the same in every API worker.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.app import API_ROOT_PATH, get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import (
    DagAccessEntity,
    DagDetails,
)
from airflow.api_fastapi.auth.tokens import get_signing_key
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from orderproc.airflow.review import REPLAY_DAG_ID, csrf_key, csrf_token, csrf_valid

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAME_ORIGIN = ("same-origin", "none")
"""``Sec-Fetch-Site`` values of a request the page itself (or the user, typing) made."""

CanView = Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=REPLAY_DAG_ID))
CanAct = Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=REPLAY_DAG_ID))


def may_act(user: BaseUser) -> bool:
    """The user may review and replay (shows the buttons; ``CanAct`` enforces it)."""
    return bool(
        get_auth_manager().is_authorized_dag(
            method="POST",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=REPLAY_DAG_ID),
            user=user,
        )
    )


def signing_key() -> bytes:
    """The key of the page's CSRF tokens (the same in every API worker)."""
    return csrf_key(str(get_signing_key("api", "secret_key")))


def form_token(user: BaseUser) -> str:
    """The CSRF token the page's forms carry for this user."""
    return csrf_token(signing_key(), str(user.get_id()))


async def require_csrf(request: Request, user: GetUserDep) -> None:
    """Refuse a state-changing request another site could have made (403)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in SAME_ORIGIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"cross-site request refused ({site})")
    token: Any = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        token = (await request.form()).get(CSRF_FIELD)  # cached: the route's Form() reads it too
    if not csrf_valid(signing_key(), str(user.get_id()), token if isinstance(token, str) else None):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or invalid CSRF token")


CsrfChecked = Depends(require_csrf)


def user_token(user: BaseUser, lifetime_s: int = 120) -> str:
    """A short-lived Airflow token of ``user``: the page calls Airflow's API as them."""
    return str(get_auth_manager().generate_jwt(user, expiration_time_in_seconds=lifetime_s))


def login_url(request: Request) -> str:
    """Airflow's login (whatever the auth manager), coming back to this page."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{API_ROOT_PATH}api/v2/auth/login?next={quote(here, safe='')}"


async def http_error(request: Request, exc: Exception) -> Response:
    """A browser opening a page without a (valid) login goes to the login page; everything
    else gets the error as JSON (401 not logged in, 403 not allowed)."""
    if not isinstance(exc, StarletteHTTPException):  # registered for these only
        raise exc
    needs_login = exc.status_code == status.HTTP_401_UNAUTHORIZED or (
        exc.status_code == status.HTTP_403_FORBIDDEN and exc.detail == "Invalid JWT token"
    )
    wants_html = "text/html" in request.headers.get("accept", "")
    if needs_login and request.method == "GET" and wants_html:
        return RedirectResponse(login_url(request), status_code=status.HTTP_303_SEE_OTHER)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
