"""The review page keeps strangers out, viewers read-only, other sites' forms refused and
every typed value harmless, through Airflow's own auth dependencies."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.store.tables import AuditLog, DlqEvent

if TYPE_CHECKING:
    from tests.plugins.conftest import Review

pytestmark = pytest.mark.integration

Seed = Callable[..., list[int]]


def routes(review: Review) -> list[tuple[str, str]]:
    """Every (method, path) of the review app, path parameters filled in."""
    from starlette.routing import Mount

    (mount,) = [
        r for r in review.client.app.routes if isinstance(r, Mount) and r.path == "/orderproc"
    ]
    app = mount.app.build()
    fill = {"{event_id}": "1", "{run_id:path}": "manual__x", "{name}": "review.css"}
    found = []
    for route in app.routes:
        path = route.path
        for key, value in fill.items():
            path = path.replace(key, value)
        found += [(method, f"/orderproc{path}") for method in sorted(route.methods - {"HEAD"})]
    return found


def snapshot(store: DlqStore) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was: rows and audit trail."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                DlqEvent.id, DlqEvent.status, DlqEvent.corrected_payload, DlqEvent.review_note
            ).order_by(DlqEvent.id)
        ).all()
        audit = conn.scalar(select(func.count()).select_from(AuditLog))
    return tuple(map(tuple, rows)), audit


def test_every_page_and_action_answers_401_without_a_login(review: Review) -> None:
    found = routes(review)
    assert ("POST", "/orderproc/events/1/approve") in found and len(found) >= 10

    answers = {
        (method, path): review.client.request(
            method, path, headers={"Accept": "application/json"}, follow_redirects=False
        ).status_code
        for method, path in found
    }

    assert set(answers.values()) == {401}, answers


def test_a_browser_without_a_login_is_sent_to_airflows_login_page(review: Review) -> None:
    page = review.get("/orderproc/?status=new", user=None, headers={"Accept": "text/html"},
                      follow_redirects=False)  # fmt: skip
    forged = review.get("/orderproc/", user=None, headers={"Accept": "text/html"},
                        cookies={"_token": "forged"}, follow_redirects=False)  # fmt: skip

    assert page.status_code == 303
    assert page.headers["location"] == "/api/v2/auth/login?next=%2Forderproc%2F%3Fstatus%3Dnew"
    login = review.client.get(page.headers["location"], follow_redirects=False)
    assert login.status_code == 307 and login.headers["location"].startswith("/auth/login")
    assert forged.status_code == 303


def test_a_viewer_can_look_but_gets_403_on_every_action(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    ids = seed_dlq(store, make_orders(2))
    store.approve([ids[1]], actor="alice")
    before = snapshot(store)
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from orderproc.airflow.review_auth import form_token

    token = form_token(SimpleAuthManagerUser(username="viewer", role="viewer"))  # a valid one

    page = review.get("/orderproc/", "viewer")
    detail = review.get(f"/orderproc/events/{ids[0]}", "viewer")
    preview = review.get("/orderproc/replay/preview", "viewer")
    refused = {
        path: review.post(path, {"csrf_token": token, "event_id": ids[0], "note": "n",
                                 "action": "approve", "price": "1"}, "viewer").status_code
        for method, path in routes(review)
        if method == "POST"
    }  # fmt: skip

    assert (page.status_code, detail.status_code, preview.status_code) == (200, 200, 200)
    assert "read only" in page.text and "csrf_token" not in page.text + detail.text
    assert 'id="approve"' not in detail.text and 'id="trigger"' not in preview.text
    assert set(refused.values()) == {403}, refused
    assert snapshot(store) == before


def test_a_state_change_needs_the_pages_token_from_the_same_origin(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    (event,) = seed_dlq(store, make_orders(1))
    url = f"/orderproc/events/{event}/approve"
    mine, admins = review.csrf("op"), review.csrf("admin")
    stamp, _, mac = mine.partition(".")
    from orderproc.airflow.review import csrf_token
    from orderproc.airflow.review_auth import signing_key

    expired = csrf_token(signing_key(), "op", now=time.time() - 9 * 3600)
    attempts = {
        "none": review.post(url, {}),
        "empty": review.post(url, {"csrf_token": ""}),
        "tampered": review.post(url, {"csrf_token": f"{stamp}.{mac[::-1]}"}),
        "another user's": review.post(url, {"csrf_token": admins}),
        "expired": review.post(url, {"csrf_token": expired}),
        "cross-site": review.post(
            url, {"csrf_token": mine}, headers={"Sec-Fetch-Site": "cross-site"}
        ),
        "same-site": review.post(
            url, {"csrf_token": mine}, headers={"Sec-Fetch-Site": "same-site"}
        ),
    }
    before = snapshot(store)

    assert {k: r.status_code for k, r in attempts.items()} == dict.fromkeys(attempts, 403)
    assert attempts["none"].json() == {"detail": "missing or invalid CSRF token"}
    assert attempts["cross-site"].json() == {"detail": "cross-site request refused (cross-site)"}
    assert snapshot(store) == before
    ok = review.post(url, {}, headers={"X-CSRF-Token": mine, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 303
    assert store.get(event).status == "approved"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"price": "-5"}, "price is negative"),
        ({"price": "abc"}, "price must be a float, got 'abc'"),
        ({"price": "nan"}, "price must be a float, got 'nan'"),
        ({"price": "1e39"}, "price 1e+39 is larger than an Avro float can hold"),
        ({"orderId": "x" * 201}, "orderId is 201 characters long; the store holds 200"),
        ({"product": "a\x00b"}, "product contains a NUL character"),
        ({"price": "150"}, "nothing to change"),
    ],
    ids=["negative", "text", "nan", "too-large", "long-id", "nul", "unchanged"],
)
def test_an_invalid_edit_is_refused_with_a_clear_message_and_nothing_saved(
    review: Review,
    store: DlqStore,
    seed_dlq: Seed,
    make_orders: Callable[..., list[Order]],
    form: dict[str, str],
    message: str,
) -> None:
    (event,) = seed_dlq(store, make_orders(1))
    before = snapshot(store)

    response = review.act(f"/orderproc/events/{event}/edit", form)

    assert response.status_code == 400
    assert message in html.unescape(response.text)
    assert 'id="error"' in response.text  # shown on the event's own page
    assert snapshot(store) == before


def test_a_row_past_review_cannot_be_edited(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    (event,) = seed_dlq(store, make_orders(1))
    store.reject([event], actor="alice", note="spam")
    before = snapshot(store)

    response = review.act(f"/orderproc/events/{event}/edit", {"price": "42"})

    assert response.status_code == 400
    assert "cannot edit" in html.unescape(response.text) and "status is rejected" in response.text
    assert snapshot(store) == before


INJECTIONS = [
    "' OR 1=1 --",
    "1; DROP TABLE dlq_events; --",
    '" OR ""="',
    "%",
    "_",
    "<script>alert(1)</script>",
    "approved' OR 'x'='x",
]
FILTERS = ["status", "order_id", "product", "reason", "category", "since", "until",
           "sort", "dir", "page", "size"]  # fmt: skip


def test_injection_strings_in_every_filter_are_harmless(
    review: Review, store: DlqStore, seed_dlq: Seed, make_orders: Callable[..., list[Order]]
) -> None:
    ids = seed_dlq(store, [*make_orders(3), None])
    store.approve(ids[:1], actor="alice")
    before = snapshot(store)
    answers: dict[tuple[str, str, str], int] = {}

    for path in ("/orderproc/", "/orderproc/replay/preview"):
        for name in FILTERS:
            for text in INJECTIONS:
                response = review.get(path, params={name: text}, headers={"Accept": "text/html"})
                answers[path, name, text] = response.status_code
                assert "<script>alert(1)" not in response.text  # escaped wherever it shows
                if response.status_code == 200 and name in ("order_id", "product", "reason"):
                    assert 'id="empty"' in response.text  # matched nothing: no row, no error
                if response.status_code == 400:
                    assert f"parameter {name}: " in html.unescape(response.text)
    bulk = review.act("/orderproc/bulk", {"action": "approve", "reason": INJECTIONS[0]})

    assert set(answers.values()) <= {200, 400}, answers
    assert answers["/orderproc/", "reason", "' OR 1=1 --"] == 200
    assert answers["/orderproc/", "status", "' OR 1=1 --"] == 400
    assert bulk.status_code == 400 and "no new rows match" in bulk.text
    assert snapshot(store) == before


@pytest.mark.parametrize("event_id", ["9" * 5000, "\u0663", "0", "-1", "1 OR 1=1"])
def test_an_event_id_that_is_not_one_is_refused_in_one_line(
    review: Review,
    store: DlqStore,
    seed_dlq: Seed,
    make_orders: Callable[..., list[Order]],
    event_id: str,
) -> None:
    seed_dlq(store, make_orders(2))
    before = snapshot(store)

    response = review.act("/orderproc/bulk", {"action": "approve", "event_id": event_id})

    assert response.status_code == 400
    assert "not an event id" in html.unescape(response.text)
    assert snapshot(store) == before


def test_the_plugin_file_loads_nothing_beyond_what_airflow_has_at_plugin_load() -> None:
    """Airflow imports every plugin file in every process, task runs included."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    plugin = Path(__file__).resolve().parents[2] / "plugins" / "dlq_review_plugin.py"
    probe = (
        "import json, runpy, sys; import airflow.plugins_manager; before = set(sys.modules); "
        "ns = runpy.run_path(sys.argv[1]); assert ns['DlqReviewPlugin'].fastapi_apps; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(plugin)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    added = json.loads(done.stdout.strip().splitlines()[-1])

    heavy = ("confluent_kafka", "fastavro", "fastapi", "jinja2", "sqlalchemy", "orderproc")
    assert [m for m in added if m.startswith(heavy)] == []


def test_a_store_that_is_down_is_one_line_without_its_password(
    review: Review, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack.airflow import database_connection

    url = f"postgresql+psycopg://orderproc:s3cret-pw@127.0.0.1:{closed_port}/orderproc"
    monkeypatch.setenv("AIRFLOW_CONN_ORDERPROC_DB", database_connection(url))

    page = review.get("/orderproc/", headers={"Accept": "text/html"})

    assert page.status_code == 503
    assert "the DLQ store failed" in page.text and "Traceback" not in page.text
    assert "s3cret-pw" not in page.text
