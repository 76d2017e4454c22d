"""deploy/grafana: the dashboard JSON is what build.py builds, its queries are valid PromQL
(promtool) naming only metrics the workers register or the recording rules record, and
its data source is the one provisioning creates. tests/integration/observability runs
every query on a real Prometheus scraping the real workers."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client import CollectorRegistry

from orderproc.metrics import (
    ConsumerMetrics,
    Health,
    MonitorMetrics,
    ProducerMetrics,
    worker_registry,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules"


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


BUILD = _build()
DASHBOARD = json.loads((GRAFANA / "dashboards" / "orderproc.json").read_text())


def exported_names() -> set[str]:
    """Every sample name the three workers expose, and every recorded series."""
    names = {"up"}
    registries: list[CollectorRegistry] = []
    for role in ("consumer", "producer", "dlq-monitor"):
        registries.append(worker_registry(role, Health()))
    ConsumerMetrics(registries[0], group="g", retry_topics=["t.retry.1"])
    ProducerMetrics(registries[1])
    MonitorMetrics(registries[2], group="g")
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            names |= {s.name for s in family.samples}
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def test_the_committed_dashboard_is_what_build_py_builds() -> None:
    assert (GRAFANA / "dashboards" / "orderproc.json").read_text() == BUILD.rendered()


def test_the_dashboard_shows_what_operators_asked_for() -> None:
    titles = {p["title"] for p in DASHBOARD["panels"]}
    assert titles >= {
        "Throughput",
        "Lag per group",
        "Retry backlog",
        "DLQ inflow by category",
        "Review backlog by status",
        "Oldest unresolved failure",
        "Flood breaker",
        "Replay outcomes",
    }


def test_every_panel_uses_the_provisioned_data_source() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    for p in DASHBOARD["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == provisioned, p["title"]


def test_every_query_names_only_metrics_that_exist() -> None:
    known = exported_names()
    words = re.compile(r"\b(orderproc[a-z0-9_:]*|up)\b(?!\s*[(=])")
    for title, expr in BUILD.queries(DASHBOARD):
        used = {w for w in words.findall(expr) if w != "orderproc"}
        assert used, f"{title}: {expr} names no metric"
        assert used <= known, f"{title}: unknown {used - known}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed (scripts/ensure-packages.sh installs prometheus)"
    rules = [
        {"record": f"panel:query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(BUILD.queries(DASHBOARD))
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
