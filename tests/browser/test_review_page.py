"""An operator's morning in a real browser: a failed order is found, corrected, approved,
previewed and replayed from Airflow's own UI, and the live consumer processes it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer
from sqlalchemy import select

from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import make_engine
from orderproc.store.tables import AuditLog, DlqEvent, ProcessedOrder

if TYPE_CHECKING:
    from tests.live_airflow import LiveAirflow

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ORDERPROC = Path(sys.executable).with_name("orderproc")


class LiveConsumer:
    """``orderproc consume`` on the session's topics and store, its lines read as they come."""

    def __init__(self, airflow: LiveAirflow, kafka_bootstrap: str) -> None:
        s = airflow.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
        env.update(
            {
                "ORDERPROC_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "ORDERPROC_ORDERS_TOPIC": s.orders_topic,
                "ORDERPROC_DLQ_TOPIC": s.dlq_topic,
                "ORDERPROC_RETRY_TOPIC_PREFIX": s.retry_topic_prefix,
                "ORDERPROC_CONSUMER_GROUP": s.consumer_group,
                "ORDERPROC_DLQ_GROUP": s.dlq_group,
                "ORDERPROC_TOPIC_PARTITIONS": "1",
                "ORDERPROC_DATABASE_URL": airflow.database_url,
                "ORDERPROC_DATA_DIR": str(s.data_dir),
                "ORDERPROC_BACKOFF_INITIAL_S": "0.2",
                "ORDERPROC_BACKOFF_MAX_S": "1",
                "ORDERPROC_BACKOFF_JITTER": "0",
                "ORDERPROC_POLL_TIMEOUT_S": "0.2",
            }
        )
        self.proc = subprocess.Popen(
            [str(ORDERPROC), "consume"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, pattern: str, timeout_s: float = 60.0) -> str:
        """The first line (from now on, or already seen) matching ``pattern`` (bounded)."""
        found = next((line for line in self.seen if re.search(pattern, line)), None)
        deadline = time.monotonic() + timeout_s
        while found is None:
            left = deadline - time.monotonic()
            assert left > 0, f"the consumer never said {pattern!r}; it said:\n" + "\n".join(
                self.seen[-20:]
            )
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                assert self.proc.poll() is None, "\n".join(self.seen[-20:])
                continue
            self.seen.append(line)
            found = line if re.search(pattern, line) else None
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def consumer(live_airflow: LiveAirflow, kafka_bootstrap: str) -> Iterator[LiveConsumer]:
    worker = LiveConsumer(live_airflow, kafka_bootstrap)
    yield worker
    worker.stop()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_the_backlog_shows_the_stores_rows_and_the_oldest_ones_age(
    live_airflow: LiveAirflow, chromium: Any, shoot: Any
) -> None:
    """On the embedded store this is ``make airflow`` on a fresh machine: the page an
    operator opens first (it once answered 500 there as soon as a row existed)."""
    from playwright.sync_api import expect

    tag = uuid.uuid4().hex[:6]
    engine = make_engine(live_airflow.database_url)
    try:
        with engine.begin() as conn:  # failed three hours ago, as the drain stores them
            ids = [_row(conn, f"old-{tag}-{i}", hours_ago=3 - i) for i in range(2)]
    finally:
        engine.dispose()
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies([{"name": "_token", "value": live_airflow.token("viewer"),
                          "url": live_airflow.url}])  # fmt: skip
    page = context.new_page()
    try:
        answer = page.goto(f"{live_airflow.url}/orderproc/?order_id=old-{tag}-0")
        assert answer is not None and answer.status == 200
        expect(page.locator("#rows")).to_contain_text(f"old-{tag}-0")
        shoot(page, "backlog-rows")
        page.goto(f"{live_airflow.url}/orderproc/events/{ids[1]}")
        expect(page.locator("#reason")).to_have_text("Simulated error: high price")
        page.goto(f"{live_airflow.url}/orderproc/")
        expect(page.locator("#oldest")).to_contain_text(re.compile(r"\d+ ?[hd]"))
    finally:
        context.close()


def _row(conn: Any, order_id: str, hours_ago: float) -> int:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    values = {
        "failure_key": f"test:{order_id}", "dlq_topic": "orders_dlq", "dlq_partition": 0,
        "dlq_offset": abs(hash(order_id)) % 10**9, "order_id": order_id, "product": "Lamp",
        "price": 150.0, "reason": "Simulated error: high price", "category": "business_rule",
        "dead_lettered_at": at, "drained_at": at, "status": "new",
    }  # fmt: skip
    return int(conn.scalar(insert(DlqEvent).values(**values).returning(DlqEvent.id)))


def test_an_operator_corrects_approves_and_replays_a_failed_order(
    live_airflow: LiveAirflow,
    kafka_bootstrap: str,
    consumer: LiveConsumer,
    chromium: Any,
    shoot: Any,
) -> None:
    from playwright.sync_api import expect

    af, tag = live_airflow, uuid.uuid4().hex[:6]
    laptop, phone = Order(f"laptop-{tag}", "Laptop", 150.0), Order(f"phone-{tag}", "Phone", 300.0)
    serde = SchemalessSerde()
    produce(kafka_bootstrap, af.settings.orders_topic,
            [(o.order_id.encode(), serde.encode(o)) for o in (laptop, phone)]
            + [(b"junk", b"\xff\x00 not avro")])  # fmt: skip
    # The live consumer retries the expensive orders and dead-letters them; the drain DAG
    # stores them for review.
    consumer.wait_for(rf"DLQ: {laptop.order_id} -> Simulated error: high price")
    consumer.wait_for(rf"DLQ: {phone.order_id} ->")
    drained = af.trigger("orders_dlq_drain", {})
    assert af.wait_run("orders_dlq_drain", drained)["state"] == "success"

    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        # Log in through Airflow's own form.
        page.goto(af.url + "/")
        page.fill("input[name=username]", "op")
        page.fill("input[name=password]", af.passwords["op"])
        shoot(page, "login")
        page.click("button[type=submit]")
        page.get_by_text("Browse", exact=True).wait_for()

        # Browse > DLQ review: the page inside Airflow's UI.
        page.get_by_text("Browse", exact=True).click()
        page.get_by_text("DLQ review").click()
        page.wait_for_url(re.compile(r".*/plugin/dlq-review"))
        frame = page.frame_locator("iframe[title='DLQ review']")
        # The session's store holds other tests' rows too: the phone is found by its id.
        frame.locator("#f-order").fill(phone.order_id)
        frame.locator("#apply").click()
        expect(frame.locator("#rows")).to_contain_text(phone.order_id)
        shoot(page, "backlog")

        # Filter the backlog: new laptops that failed the business rule (this test's one).
        frame.locator("#f-status").select_option("new")
        frame.locator("#f-product").fill("Laptop")
        frame.locator("#f-category").select_option("business_rule")
        frame.locator("#f-order").fill(laptop.order_id)
        frame.locator("#apply").click()
        expect(frame.locator("#rows tbody tr")).to_have_count(1)
        expect(frame.locator("#rows")).to_contain_text(laptop.order_id)
        shoot(page, "filtered")

        # Open the failed order, correct its price, approve it.
        frame.locator("a[id^=open-]").click()
        expect(frame.locator("#reason")).to_have_text("Simulated error: high price")
        shoot(page, "detail")
        frame.locator("#edit-price").fill("42.5")
        frame.locator("#save").click()
        expect(frame.locator("#done")).to_contain_text("Correction saved")
        expect(frame.locator("#fix-price")).to_have_text("42.5")
        expect(frame.locator("#orig-price")).to_have_text("150.0")
        shoot(page, "corrected")
        frame.locator("#approve").click()
        expect(frame.locator("#status")).to_have_text("approved")
        shoot(page, "approved")

        # Preview exactly what the replay would publish, then replay it.
        frame.locator("#preview").click()
        expect(frame.locator("#plan")).to_contain_text('"price": 42.5')
        expect(frame.locator("#summary")).to_contain_text("1 row(s): 1 to publish")
        shoot(page, "preview")
        frame.locator("#trigger").click()
        # The run publishes its canary (here the one row), waits deferred for the live
        # consumer's verdict on it, then ends: the page says what became of the row.
        expect(frame.locator("#state")).to_have_text("success", timeout=300_000)
        expect(frame.locator("[id^=status-]")).to_have_text("replayed", timeout=10_000)
        expect(frame.locator("#said")).to_have_text(
            "finished: 1 of 1 replayed orders processed", timeout=10_000
        )
        expect(frame.locator("[id^=outcome-]")).to_have_text("processed")
        expect(frame.locator("#triggered-by")).to_have_text("op")
        shoot(page, "replayed")
        run_id = frame.locator("#run-id").inner_text()

        # The link leaves the frame for Airflow's own page of the run.
        frame.locator("#airflow-run").click()
        page.wait_for_url(re.compile(r".*/dags/orders_dlq_replay/runs/manual__.*"))
        expect(page.get_by_text("Triggering User")).to_be_visible()
        shoot(page, "airflow-run")
    finally:
        context.close()

    # The live consumer processed the corrected order, from the replay.
    assert "price=42.50" in consumer.wait_for(rf"Processed {laptop.order_id} ")
    engine = make_engine(af.database_url)
    try:
        with engine.connect() as conn:
            processed = conn.execute(
                select(ProcessedOrder.price, ProcessedOrder.replay_id).where(
                    ProcessedOrder.order_id == laptop.order_id
                )
            ).one()
            row = conn.execute(
                select(DlqEvent.id, DlqEvent.status, DlqEvent.price).where(
                    DlqEvent.order_id == laptop.order_id
                )
            ).one()
            trail = conn.execute(
                select(AuditLog.action, AuditLog.actor)
                .where(AuditLog.dlq_event_id == row.id)
                .order_by(AuditLog.id)
            ).all()
    finally:
        engine.dispose()
    assert (processed.price, processed.replay_id) == (42.5, run_id)
    assert (row.status, row.price) == ("replayed", 150.0)  # the original kept beside the fix
    assert [tuple(t) for t in trail][1:] == [
        ("edited", "op"),
        ("approved", "op"),
        ("replayed", f"airflow:{run_id} by op"),
    ]


@pytest.mark.parametrize("live_airflow", ["postgresql"], indirect=True)  # Airflow's own form
def test_the_trigger_form_marks_only_real_requirements_and_starts_dry(
    live_airflow: LiveAirflow, chromium: Any, shoot: Any
) -> None:
    import json

    from playwright.sync_api import expect

    context = chromium.new_context(viewport={"width": 1400, "height": 2000})
    token = live_airflow.token("op")
    context.add_cookies([{"name": "_token", "value": token, "url": live_airflow.url}])
    page = context.new_page()
    sent: list[Any] = []
    page.on("response", lambda r: sent.append((r.request.post_data, r.json()))
            if r.request.method == "POST" and r.url.endswith("/dagRuns") else None)  # fmt: skip
    try:
        page.goto(live_airflow.url + "/dags/orders_dlq_replay")
        page.get_by_role("button", name=re.compile("^Trigger", re.I)).first.click()
        dialog = page.locator("[role=dialog][data-state=open]")
        expect(dialog.get_by_text("Dead-lettered before")).to_be_visible()
        shoot(page, "trigger-form")

        def required(label: str) -> bool:
            field = dialog.locator("label.chakra-field__label", has_text=re.compile(f"^{label}"))
            return field.first.get_attribute("data-required") is not None

        optional = ["DLQ event ids", "Order ids", "Reasons", "Error categories",
                    "Dead-lettered since", "Dead-lettered before"]  # fmt: skip
        assert {label: required(label) for label in optional} == dict.fromkeys(optional, False)
        assert required("Status")  # a real requirement keeps its star
        expect(dialog.locator("input[name=element_dry_run]")).to_be_checked()
        dialog.get_by_role("button", name=re.compile("^Trigger$", re.I)).click()
        expect(page.locator("[role=dialog][data-state=open]")).to_have_count(0)
    finally:
        context.close()

    ((body, run),) = sent
    conf = json.loads(body)["conf"]
    assert conf["dry_run"] is True
    assert all(conf[name] is None for name in ("event_ids", "order_ids", "reasons", "categories"))
    finished = live_airflow.wait_run("orders_dlq_replay", run["dag_run_id"])
    assert (finished["state"], finished["conf"]["dry_run"]) == ("success", True)
