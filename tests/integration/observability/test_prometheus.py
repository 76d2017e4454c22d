"""A real Prometheus, started on loopback with deploy/prometheus's config and rules,
scraping a real producer, consumer and DLQ monitor (processes, as systemd runs them).

The system runs a short life: mixed orders (processed, retried, dead-lettered), a
redelivered order, the drain, a review that corrects some failures and approves one
uncorrected, the replay (one replayed order processed, one failing again), then a flood
of failing orders that opens the consumer's flood breaker. The test then requires:
``FloodBreakerOpen`` firing in ``/api/v1/alerts`` (the system's own behaviour drove it),
every series the rules and the dashboard name exists, every dashboard query returns
data, and every metric the workers register moved.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from orderproc.config import Settings
from orderproc.dlq.drain import run_drain
from orderproc.dlq.replay import ReplayRequest, replay_with_settings
from orderproc.dlq.store import DlqStore
from orderproc.models import Order
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import open_engine
from tests.conftest import RunCli, RunningWorker
from tests.support import free_ports, http_get, metric_value, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
JOBS = ("orderproc-consumer", "orderproc-dlq-monitor", "orderproc-producer")

STILL_BY_NATURE = {
    "orderproc_build_info": "an info metric: always 1",
    "orderproc_worker_healthy": "1 while healthy (tests/unit/test_metrics.py shows it at 0)",
    "orderproc_order_delivery_failures": "tests/unit/worker/test_producer.py counts failures",
    "orderproc_monitor_refresh_failures": "tests/unit/dlq/test_watch.py fails a source",
}
"""Registered metrics a healthy run does not move, and the test that shows each moving."""


class Prom:
    """The Prometheus under test: its HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        code, body = http_get(f"{self.base}/api/v1/{path}?{query}", timeout_s=10)
        assert code == 200, body
        return json.loads(body)["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def firing(self) -> set[str]:
        alerts = self.api("alerts")["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, int]], Prom]]:
    """``start_prometheus({job: port})``: deploy/prometheus's config with these targets and
    1 s scrape and evaluation intervals, on a free loopback port; stopped by its pid."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, int]) -> Prom:
        exe = shutil.which("prometheus")
        assert exe, "prometheus is not installed (scripts/ensure-packages.sh installs it)"
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS / f) for f in config["rule_files"]]
        (port,) = free_ports(1)
        for job in config["scrape_configs"]:
            target = targets.get(job["job_name"], port)
            job["static_configs"] = [{"targets": [f"127.0.0.1:{target}"]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(subprocess.Popen(
            [exe, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        prom = Prom(port)
        wait_until(lambda: http_get(f"{prom.base}/-/ready")[0] == 200, timeout_s=60,
                   what="Prometheus to be ready")  # fmt: skip
        return prom

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def _moved(before: str, after: str) -> set[str]:
    """Families with a sample that changed, appeared or went away."""
    old, new = _samples(before), _samples(after)
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    families = _families(before) | _families(after)
    return {f for f in families for name, _ in changed if name == f or name.startswith(f + "_")}


def _names_in(expr: str) -> set[str]:
    words = re.findall(r"\b(orderproc[a-z0-9_:]*|up)\b(?!\s*[(=])", expr)
    return {w for w in words if w != "orderproc"}


def _rule_exprs() -> list[str]:
    return [
        rule["expr"]
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "orderproc.json").read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def _counter(worker: RunningWorker, name: str, **labels: str) -> float:
    return metric_value(worker.metrics(), name, **labels) or 0.0


def test_prometheus_scrapes_the_system_and_fires_flood_breaker_open(
    make_settings: Callable[..., Settings],
    pg_url: str,
    run_cli: RunCli,
    start_worker: Callable[..., RunningWorker],
    start_prometheus: Callable[[dict[str, int]], Prom],
    make_producer: Callable[..., Producer],
) -> None:
    settings = make_settings(
        database_url=pg_url, flood_window=20, flood_ratio=0.8, flood_cooldown_s=900
    )
    monitor_env = {"ORDERPROC_MONITOR_INTERVAL_S": "1"}
    consumer = start_worker(settings, "consume", "-q")
    monitor = start_worker(settings, "dlq", "tail", env=monitor_env)
    producer = start_worker(settings, "produce", "--rate", "10", "--fail-share", "0.25", "-q")
    workers = {"orderproc-consumer": consumer, "orderproc-dlq-monitor": monitor,
               "orderproc-producer": producer}  # fmt: skip
    seen = {job: [w.metrics()] for job, w in workers.items()}  # snapshots along the run
    prom = start_prometheus({job: w.port for job, w in workers.items()})

    # Mixed orders: processed, retried, dead-lettered; one order delivered twice.
    wait_until(lambda: _counter(consumer, "orderproc_orders_dead_lettered_total",
                                category="business_rule") >= 3,
               timeout_s=120, what="three dead letters")  # fmt: skip
    twice = Order("twice-1", "item1", 12.5)
    kafka = make_producer()
    for _ in range(2):
        kafka.produce(settings.orders_topic, key=b"twice-1", value=SchemalessSerde().encode(twice))
    assert kafka.flush(30) == 0
    wait_until(lambda: _counter(consumer, "orderproc_orders_duplicate_total") >= 1,
               timeout_s=60, what="the redelivered order to be ignored")  # fmt: skip

    # The drain, a review (corrections, and one approved as it was), the replay.
    assert run_drain(settings).inserted >= 3
    with open_engine(pg_url) as engine:
        store = DlqStore(engine)
        new = [e.id for e in store.list_events() if e.status == "new"]
        for event_id in new[1:]:
            store.edit(event_id, {"price": 10.0}, actor="test")
        store.approve(new, actor="test")
    wait_until(lambda: _counter(monitor, "orderproc_review_oldest_unresolved_age_seconds") > 0,
               timeout_s=60, what="the monitor to see the approved rows")  # fmt: skip
    for job, w in workers.items():
        seen[job].append(w.metrics())
    assert replay_with_settings(settings, ReplayRequest()).delivered
    wait_until(lambda: _counter(consumer, "orderproc_replayed_orders_total",
                                outcome="dead_lettered") >= 1,
               timeout_s=120, what="the uncorrected replayed order to fail again")  # fmt: skip
    assert _counter(consumer, "orderproc_replayed_orders_total", outcome="processed") >= 1

    # A flood of failing orders: the breaker opens, and Prometheus says so.
    flood = run_cli(settings, "produce", "--count", "60", "--rate", "0", "--fail-share", "1", "-q")
    assert flood.returncode == 0, flood.stderr
    wait_until(lambda: "FloodBreakerOpen" in prom.firing(), timeout_s=120,
               what="FloodBreakerOpen firing in /api/v1/alerts")  # fmt: skip

    targets = prom.api("targets")["activeTargets"]
    assert {
        t["labels"]["job"]: t["health"] for t in targets if t["labels"]["job"] in JOBS
    } == dict.fromkeys(JOBS, "up")
    used = set().union(*(_names_in(e) for e in _rule_exprs()),
                       *(_names_in(e) for _, e in _dashboard_queries()))  # fmt: skip

    still_missing: set[str] = set()

    def all_exist() -> bool:
        gone = {name for name in used if not prom.query(f'count({{__name__="{name}"}})')}
        still_missing.clear()
        still_missing.update(gone)
        return not gone

    wait_until(all_exist, timeout_s=60, what=f"every series rules and panels use: {still_missing}")

    empty: list[str] = []

    def every_panel_has_data() -> bool:
        empty[:] = [f"{t}: {e}" for t, e in _dashboard_queries() if not prom.query(e)]
        return not empty

    wait_until(every_panel_has_data, timeout_s=60, what=f"data for every panel: {empty}")

    for job, w in workers.items():
        seen[job].append(w.metrics())
    for job in JOBS:
        registered = {f for f in _families(seen[job][-1]) if f.startswith("orderproc_")}
        moved = set().union(*(_moved(a, b) for a, b in itertools.pairwise(seen[job])))
        still = registered - moved - set(STILL_BY_NATURE)
        assert still == set(), f"{job}: registered but never moved: {sorted(still)}"
