"""The review page's routes: parse a request (``orderproc.airflow.review``), read or act
through the DLQ store as the logged-in Airflow user, render the plugin's templates
(autoescaped).

Built by the API server on the page's first request (``plugins/dlq_review_plugin.py``),
which hands over the plugin's folder of templates and assets. Pages are GETs anyone who
may read ``orders_dlq_replay``'s runs may open; actions are POSTs (``CanAct`` +
``CsrfChecked``) answered with a redirect back to a page (post/redirect/get), naming what
was done with a code, never with free text.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.app import API_ROOT_PATH
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, FastAPI, Form, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from orderproc.airflow.connections import DB_CONN_ID, database_url
from orderproc.airflow.rest import TERMINAL_STATES, AirflowApiError, AirflowRest, api_base_url
from orderproc.airflow.review import (
    BULK_LIMIT,
    REPLAY_DAG_ID,
    BacklogQuery,
    bulk_ids,
    edit_changes,
    event_detail,
    note_of,
    preview,
    replay_conf,
)
from orderproc.airflow.review_auth import (
    CanAct,
    CanView,
    CsrfChecked,
    form_token,
    http_error,
    may_act,
    user_token,
)
from orderproc.clock import utcnow
from orderproc.config import get_settings
from orderproc.dlq.corrections import payload_of
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.store import DlqStore
from orderproc.errors import (
    ConfigError,
    OrderProcError,
    RegistryError,
    RegistryUnavailableError,
    ReviewError,
    StoreError,
    UnknownEventError,
)
from orderproc.report.render import fmt_age
from orderproc.serde import OrderSchema, local_schema, serde_for
from orderproc.store.engine import make_engine, store_error

ASSETS = {"review.css": "text/css", "review.js": "text/javascript"}
DONE = {
    "approved": "Approved: the row will be replayed by the next replay of approved rows.",
    "rejected": "Rejected: the row will never be replayed.",
    "edited": "Correction saved; the original order is kept beside it.",
    "bulk-approved": "Approved {n} row(s).",
    "bulk-rejected": "Rejected {n} row(s).",
}
"""What a redirect after an action says, by the code it carries."""
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    ),
}

router = APIRouter()
_stores: dict[str, DlqStore] = {}
_stores_lock = threading.Lock()


def create_app(folder: Path) -> FastAPI:
    """The review app the plugin mounts at ``/orderproc``; ``folder`` holds its
    ``templates`` and ``assets``."""
    app = FastAPI(title="orderproc DLQ review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.folder = folder
    app.state.templates = _templates(folder / "templates")
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(OrderProcError, _refused)
    app.add_exception_handler(SQLAlchemyError, _store_failed)
    app.include_router(router)
    return app


def _templates(folder: Path) -> Environment:
    env = Environment(
        loader=FileSystemLoader(folder),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    env.filters["age"] = lambda at: fmt_age(utcnow() - at) if at else "n/a"
    return env


def store() -> DlqStore:
    """The DLQ store of the ``orderproc_db`` connection (one engine per database)."""
    url = database_url(DB_CONN_ID, get_settings())
    with _stores_lock:
        if url not in _stores:
            _stores[url] = DlqStore(make_engine(url))
        return _stores[url]


def close_stores() -> None:
    """Close every database connection the page opened (tests; a stopping server)."""
    with _stores_lock:
        for dlq in _stores.values():
            dlq.engine.dispose()
        _stores.clear()


# -- pages ---------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, dependencies=[CanView])
def backlog(request: Request, user: GetUserDep) -> Response:
    """Filtered, sorted, paginated rows, counts per status, the oldest unresolved row."""
    query = BacklogQuery.parse(request.query_params)
    dlq = store()
    flt = query.event_filter()
    return _page(
        request,
        user,
        "backlog.html",
        q=query,
        page=dlq.page(flt, query.order(), number=query.page, size=query.size),
        counts=dlq.status_counts(flt),
        oldest=dlq.oldest_unresolved(),
        choices=dlq.choices(),
        bulk_limit=BULK_LIMIT,
    )


@router.get("/events/{event_id}", response_class=HTMLResponse, dependencies=[CanView])
def detail(event_id: int, request: Request, user: GetUserDep) -> Response:
    """One failure: order, error, source, envelope, copies, lineage, audit trail."""
    return _detail(request, user, event_id)


@router.get("/replay/preview", response_class=HTMLResponse, dependencies=[CanView])
def replay_preview(request: Request, user: GetUserDep) -> Response:
    """The replay's dry run over the approved rows the filters select."""
    query = BacklogQuery.parse(request.query_params)
    settings = get_settings()
    topic = settings.orders_topic
    rows, schema = preview(store(), query, topic=topic, limit=BULK_LIMIT,
                           serde=serde_for(settings, latest=True))  # fmt: skip
    return _page(request, user, "preview.html", q=query, rows=rows, topic=topic, schema=schema)


@router.get("/runs/{run_id:path}", response_class=HTMLResponse, dependencies=[CanView])
def replay_run(run_id: str, request: Request, user: GetUserDep) -> Response:
    """A replay run's state (from Airflow's API, as the user) and its rows' state."""
    run = AirflowRest(api_base_url(), user_token(user)).run(REPLAY_DAG_ID, run_id)
    asked = (run.get("conf") or {}).get("event_ids")
    # The conf is whatever the run was triggered with: keep only what can be an event id.
    ids = tuple(i for i in asked if type(i) is int)[:BULK_LIMIT] if isinstance(asked, list) else ()
    rows = store().list_events(EventFilter(ids=ids), limit=len(ids)) if ids else []
    return _page(
        request,
        user,
        "run.html",
        run=run,
        rows=rows,
        finished=run.get("state") in TERMINAL_STATES,
        airflow_link=f"{API_ROOT_PATH}dags/{REPLAY_DAG_ID}/runs/{quote(run_id, safe='')}",
    )


@router.get("/assets/{name}", dependencies=[CanView])
def asset(name: str, request: Request) -> Response:
    """The page's stylesheet and script (named, never a path)."""
    if name not in ASSETS:
        return JSONResponse({"detail": "Not Found"}, status_code=status.HTTP_404_NOT_FOUND)
    body = (request.app.state.folder / "assets" / name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})


# -- actions -------------------------------------------------------------------------

Note = Annotated[str, Form()]


@router.post("/events/{event_id}/approve", dependencies=[CanAct, CsrfChecked])
def approve(event_id: int, request: Request, user: GetUserDep, note: Note = "") -> Response:
    store().approve([event_id], actor=user.get_name(), note=note_of(note))
    return _back(request, f"/events/{event_id}", done="approved")


@router.post("/events/{event_id}/reject", dependencies=[CanAct, CsrfChecked])
def reject(event_id: int, request: Request, user: GetUserDep, note: Note = "") -> Response:
    store().reject([event_id], actor=user.get_name(), note=note_of(note, required=True))
    return _back(request, f"/events/{event_id}", done="rejected")


@router.post("/events/{event_id}/edit", dependencies=[CanAct, CsrfChecked])
async def edit(event_id: int, request: Request, user: GetUserDep) -> Response:
    """Save a correction, validated with the Avro schema and the store's limits; a refused
    one re-shows the page with the reason, and nothing is saved."""
    form = await request.form()
    try:
        await run_in_threadpool(_edit, event_id, form, user.get_name())
    except ReviewError as exc:
        return await run_in_threadpool(
            _detail, request, user, event_id, error=str(exc), status_code=400
        )
    return _back(request, f"/events/{event_id}", done="edited")


def _edit(event_id: int, form: FormData, actor: str) -> None:
    dlq = store()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    schema = serde_for(get_settings(), latest=True).writer_schema()
    changes = edit_changes(values, payload_of(dlq.get(event_id)), schema)
    dlq.edit(event_id, changes, actor=actor, note=note_of(values.get("note")), schema=schema)


@router.post("/bulk", dependencies=[CanAct, CsrfChecked])
async def bulk(request: Request, user: GetUserDep) -> Response:
    """Approve or reject the chosen rows, or every new row the filters select."""
    form = await request.form()
    query = BacklogQuery.parse({k: v for k, v in form.items() if k in BacklogQuery.model_fields})
    action = str(form.get("action", ""))
    if action not in ("approve", "reject"):
        raise ConfigError(f"unknown bulk action {action!r}: approve or reject")
    chosen = [_id(v) for v in form.getlist("event_id")]
    note = note_of(str(form.get("note", "")), required=action == "reject")
    ids = await run_in_threadpool(_bulk, query, chosen, action, note, user.get_name())
    done = "bulk-approved" if action == "approve" else "bulk-rejected"
    return _back(request, "/", query.link(), done=done, n=len(ids))


def _bulk(
    query: BacklogQuery, chosen: list[int], action: str, note: str | None, actor: str
) -> list[int]:
    dlq = store()
    ids = bulk_ids(dlq, query, chosen)
    (dlq.approve if action == "approve" else dlq.reject)(ids, actor=actor, note=note)
    return ids


@router.post("/replay", dependencies=[CanAct, CsrfChecked])
async def replay(request: Request, user: GetUserDep) -> Response:
    """Trigger ``orders_dlq_replay`` for exactly the previewed rows, as the user."""
    form = await request.form()
    conf = replay_conf([_id(v) for v in form.getlist("event_id")])
    rest = AirflowRest(api_base_url(), user_token(user))
    run_id = await run_in_threadpool(rest.trigger, REPLAY_DAG_ID, conf)
    return _back(request, f"/runs/{quote(run_id, safe='')}")


# -- helpers -------------------------------------------------------------------------


def _id(value: Any) -> int:
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) < 1:
        raise ConfigError(f"not an event id: {text[:40]!r}")
    return int(text)


def _env(request: Request) -> Environment:
    env: Environment = request.app.state.templates
    return env


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _page(
    request: Request, user: BaseUser, template: str, *, status_code: int = 200, **values: Any
) -> HTMLResponse:
    act = may_act(user)
    done = DONE.get(request.query_params.get("done", ""))
    body = (
        _env(request)
        .get_template(template)
        .render(
            base=_base(request),
            user=user.get_name(),
            may_act=act,
            csrf=form_token(user) if act else "",
            done=done.format(n=_count(request)) if done else None,
            **values,
        )
    )
    return HTMLResponse(body, status_code=status_code, headers=HEADERS)


def _count(request: Request) -> int:
    n = request.query_params.get("n", "")
    return int(n) if n.isdigit() else 0


def _detail(
    request: Request, user: BaseUser, event_id: int, *, error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:  # fmt: skip
    info = event_detail(store(), event_id)
    schema, problem = _edit_schema()
    return _page(request, user, "detail.html", d=info, e=info.event, error=error or problem,
                 status_code=status_code, fields=[f["name"] for f in schema.fields],
                 schema=schema.describe())  # fmt: skip


def _edit_schema() -> tuple[OrderSchema, str | None]:
    """The schema a correction is written with; the local one (and why) when the registry
    cannot say: the page still shows the failure."""
    try:
        return serde_for(get_settings(), latest=True).writer_schema(), None
    except RegistryError as exc:
        return local_schema(), f"{exc} (the form shows this build's fields)"


def _back(request: Request, path: str, query: str = "", **done: Any) -> RedirectResponse:
    """See other: ``path`` of this app, with ``query`` and what was done."""
    extra = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in done.items())
    qs = "&".join(part for part in (query, extra) if part)
    url = _base(request) + path + (f"?{qs}" if qs else "")
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


async def _refused(request: Request, exc: Exception) -> Response:
    """An expected failure (bad filter, refused action, Airflow said no) in one line: an
    error page for a browser, JSON for anything else."""
    code = status.HTTP_400_BAD_REQUEST
    if isinstance(exc, AirflowApiError):
        code = status.HTTP_502_BAD_GATEWAY
    elif isinstance(exc, StoreError | RegistryUnavailableError):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif isinstance(exc, UnknownEventError):
        code = status.HTTP_404_NOT_FOUND
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": str(exc)}, status_code=code)
    body = (
        _env(request)
        .get_template("error.html")
        .render(base=_base(request), message=str(exc), status_code=code)
    )
    return HTMLResponse(body, status_code=code, headers=HEADERS)


async def _store_failed(request: Request, exc: Exception) -> Response:
    """The DLQ store failed: one line (no password, no traceback), 503."""
    return await _refused(request, store_error("the DLQ store failed", exc))
