"""The review page's routes: parse a request (``orderproc.airflow.review``), read or act
through the DLQ store as the logged-in Airflow user, render the plugin's templates
(autoescaped).

Built by the API server on the page's first request (``plugins/dlq_review_plugin.py``),
which hands over the plugin's folder of templates and assets. Pages are GETs anyone who
may read ``orders_dlq_replay``'s runs may open; actions are POSTs (``CanAct`` +
``CsrfChecked``) answered with a redirect back to a page (post/redirect/get), naming what
was done with a code, never with free text. Two answers are pages instead: an action
taken from a stale view (the event as it is now, the change in between named, 409), and a
bulk action that skipped rows (the backlog, listing them and why).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from airflow.api_fastapi.app import API_ROOT_PATH
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, FastAPI, Form, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from orderproc.airflow.connections import DB_CONN_ID, database_url
from orderproc.airflow.rest import TERMINAL_STATES, AirflowRest, api_base_url
from orderproc.airflow.review import (
    BULK_LIMIT,
    REPLAY_DAG_ID,
    BacklogQuery,
    bulk_ids,
    edit_changes,
    event_detail,
    event_id_of,
    note_of,
    preview,
    replay_conf,
    ticked,
    version_of,
)
from orderproc.airflow.review_auth import (
    CanAct,
    CanView,
    CsrfChecked,
    http_error,
    user_token,
)
from orderproc.airflow.review_render import (
    DONE,
    back,
    page,
    refused,
    store_failed,
    templates,
)
from orderproc.airflow.review_runs import resume_conf, run_page
from orderproc.config import get_settings
from orderproc.dlq.corrections import payload_of
from orderproc.dlq.store import DlqStore, Reviewed
from orderproc.errors import (
    ConfigError,
    ConflictError,
    OrderProcError,
    RegistryError,
    ReviewError,
)
from orderproc.serde import OrderSchema, local_schema, serde_for
from orderproc.store.engine import make_engine

ASSETS = {"review.css": "text/css", "review.js": "text/javascript"}
router = APIRouter()
_stores: dict[str, DlqStore] = {}
_stores_lock = threading.Lock()


def create_app(folder: Path) -> FastAPI:
    """The review app the plugin mounts at ``/orderproc``; ``folder`` holds its
    ``templates`` and ``assets``."""
    app = FastAPI(title="orderproc DLQ review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.folder = folder
    app.state.templates = templates(folder / "templates")
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(OrderProcError, refused)
    app.add_exception_handler(SQLAlchemyError, store_failed)
    app.include_router(router)
    return app


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
    return _backlog(request, user, BacklogQuery.parse(request.query_params))


def _backlog(
    request: Request,
    user: BaseUser,
    query: BacklogQuery,
    done: str | None = None,
    skipped: Mapping[int, str] | None = None,
) -> HTMLResponse:
    dlq = store()
    flt = query.event_filter()
    return page(
        request,
        user,
        "backlog.html",
        q=query,
        page=dlq.page(flt, query.order(), number=query.page, size=query.size),
        counts=dlq.status_counts(flt),
        oldest=dlq.oldest_unresolved(),
        choices=dlq.choices(),
        bulk_limit=BULK_LIMIT,
        said=done,
        skipped=dict(skipped or {}),
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
    return page(request, user, "preview.html", q=query, rows=rows, topic=topic, schema=schema)


@router.get("/runs/{run_id:path}", response_class=HTMLResponse, dependencies=[CanView])
def replay_run(run_id: str, request: Request, user: GetUserDep) -> Response:
    """A replay run's state (from Airflow's API, as the user), its verdict, and what
    became of each of its rows."""
    run = AirflowRest(api_base_url(), user_token(user)).run(REPLAY_DAG_ID, run_id)
    conf = run.get("conf") if isinstance(run.get("conf"), dict) else {}
    return page(
        request,
        user,
        "run.html",
        run=run,
        p=run_page(store(), run_id, conf or {}, limit=BULK_LIMIT),
        finished=run.get("state") in TERMINAL_STATES,
        airflow_link=f"{API_ROOT_PATH}dags/{REPLAY_DAG_ID}/runs/{quote(run_id, safe='')}",
        run_path=quote(run_id, safe=""),
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
Version = Annotated[str, Form()]


class _Answer:
    """What ``_conflicts`` answers instead, when the action was refused as stale."""

    response: Response | None = None


@contextmanager
def _conflicts(request: Request, user: BaseUser, event_id: int) -> Iterator[_Answer]:
    """An action made from a stale view: the page as it is now, the conflict named, 409."""
    answer = _Answer()
    try:
        yield answer
    except ConflictError as exc:
        answer.response = _detail(
            request, user, event_id, error=str(exc), status_code=409, conflict=True
        )


@router.post("/events/{event_id}/approve", dependencies=[CanAct, CsrfChecked])
def approve(
    event_id: int, request: Request, user: GetUserDep, note: Note = "", version: Version = ""
) -> Response:
    seen = {event_id: version_of(version)} if version else None
    with _conflicts(request, user, event_id) as answer:
        store().approve([event_id], actor=user.get_name(), note=note_of(note), seen=seen)
    return answer.response or back(request, f"/events/{event_id}", done="approved")


@router.post("/events/{event_id}/reject", dependencies=[CanAct, CsrfChecked])
def reject(
    event_id: int, request: Request, user: GetUserDep, note: Note = "", version: Version = ""
) -> Response:
    seen = {event_id: version_of(version)} if version else None
    why = note_of(note, required=True)
    with _conflicts(request, user, event_id) as answer:
        store().reject([event_id], actor=user.get_name(), note=why, seen=seen)
    return answer.response or back(request, f"/events/{event_id}", done="rejected")


@router.post("/events/{event_id}/edit", dependencies=[CanAct, CsrfChecked])
async def edit(event_id: int, request: Request, user: GetUserDep) -> Response:
    """Save a correction, validated with the Avro schema and the store's limits; a refused
    one (invalid, or made from a stale view) re-shows the page as it is now with the
    reason, and nothing is saved."""
    form = await request.form()
    try:
        await run_in_threadpool(_edit, event_id, form, user.get_name())
    except ReviewError as exc:
        return await run_in_threadpool(
            _detail, request, user, event_id, error=str(exc),
            status_code=_status_of(exc), conflict=isinstance(exc, ConflictError),
        )  # fmt: skip
    return back(request, f"/events/{event_id}", done="edited")


def _edit(event_id: int, form: FormData, actor: str) -> None:
    dlq = store()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    seen = version_of(values["version"]) if values.get("version") else None
    schema = serde_for(get_settings(), latest=True).writer_schema()
    changes = edit_changes(values, payload_of(dlq.get(event_id)), schema)
    dlq.edit(event_id, changes, actor=actor, note=note_of(values.get("note")), seen=seen,
             schema=schema)  # fmt: skip


@router.post("/bulk", dependencies=[CanAct, CsrfChecked])
async def bulk(request: Request, user: GetUserDep) -> Response:
    """Approve or reject the chosen rows (each at the version the page showed), or every
    new row the filters select; the page then lists the rows it skipped and why."""
    form = await request.form()
    query = BacklogQuery.parse({k: v for k, v in form.items() if k in BacklogQuery.model_fields})
    action = str(form.get("action", ""))
    if action not in ("approve", "reject"):
        raise ConfigError(f"unknown bulk action {action!r}: approve or reject")
    seen = dict(ticked(v) for v in form.getlist("event_id"))
    note = note_of(str(form.get("note", "")), required=action == "reject")
    done = await run_in_threadpool(_bulk, query, seen, action, note, user.get_name())
    code = "bulk-approved" if action == "approve" else "bulk-rejected"
    if not done.skipped:
        return back(request, "/", query.link(), done=code, n=len(done.done))
    said = DONE[code].format(n=len(done.done))
    return await run_in_threadpool(_backlog, request, user, query, said, done.skipped)


def _bulk(
    query: BacklogQuery, seen: dict[int, int | None], action: str, note: str | None, actor: str
) -> Reviewed:
    dlq = store()
    ids = bulk_ids(dlq, query, list(seen))
    versions = {i: v for i, v in seen.items() if v is not None}
    review = dlq.approve if action == "approve" else dlq.reject
    return review(ids, actor=actor, note=note, seen=versions, partial=True)


@router.post("/replay", dependencies=[CanAct, CsrfChecked])
async def replay(request: Request, user: GetUserDep) -> Response:
    """Trigger ``orders_dlq_replay`` for exactly the previewed rows, as the user."""
    form = await request.form()
    conf = replay_conf([event_id_of(v) for v in form.getlist("event_id")])
    rest = AirflowRest(api_base_url(), user_token(user))
    run_id = await run_in_threadpool(rest.trigger, REPLAY_DAG_ID, conf)
    return back(request, f"/runs/{quote(run_id, safe='')}")


@router.post("/runs/{run_id:path}/resume", dependencies=[CanAct, CsrfChecked])
async def resume(run_id: str, request: Request, user: GetUserDep) -> Response:
    """Replay what a paused run gave back, as a new run: with the same options ("resume"),
    or without a canary (``canary=0``: for the one who knows better)."""
    form = await request.form()
    canary = str(form.get("canary", "")) != "0"
    conf = await run_in_threadpool(resume_conf, store(), run_id, canary=canary)
    rest = AirflowRest(api_base_url(), user_token(user))
    new_run = await run_in_threadpool(rest.trigger, REPLAY_DAG_ID, conf)
    return back(request, f"/runs/{quote(new_run, safe='')}")


# -- helpers -------------------------------------------------------------------------


def _status_of(exc: ReviewError) -> int:
    return status.HTTP_409_CONFLICT if isinstance(exc, ConflictError) else 400


def _detail(
    request: Request, user: BaseUser, event_id: int, *, error: str | None = None,
    status_code: int = 200, conflict: bool = False,
) -> HTMLResponse:  # fmt: skip
    info = event_detail(store(), event_id)
    schema, problem = _edit_schema()
    return page(
        request, user, "detail.html", d=info, e=info.event, error=error or problem,
        status_code=status_code, conflict=conflict, fields=[f["name"] for f in schema.fields],
        schema=schema.describe(),
    )  # fmt: skip


def _edit_schema() -> tuple[OrderSchema, str | None]:
    """The schema a correction is written with; the local one (and why) when the registry
    cannot say: the page still shows the failure."""
    try:
        return serde_for(get_settings(), latest=True).writer_schema(), None
    except RegistryError as exc:
        return local_schema(), f"{exc} (the form shows this build's fields)"
