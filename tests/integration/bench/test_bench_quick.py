"""``make bench-quick``: the whole benchmark once, at reduced sizes, on the real broker,
registry and PostgreSQL. No threshold is asserted (a ratio of runs this short means
little); what is asserted is that every scenario ran, checked its own work (a run that
loses or duplicates an order stops the bench) and reported a ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stats import KINDS, RATIOS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ORDERS = 3_000


def test_bench_quick_runs_every_scenario_and_reports_every_ratio(
    kafka_bootstrap: str, postgres_server_url: str, schema_registry: str, tmp_path: Path
) -> None:
    out = tmp_path / "latest.json"
    env = {
        **os.environ,
        "ORDERPROC_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ORDERPROC_DATABASE_URL": postgres_server_url,
        "ORDERPROC_SCHEMA_REGISTRY_URL": schema_registry,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--orders", str(ORDERS), "--repeats", "1",
         "--output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["orders"] == ORDERS and report["repeats"] == 1
    for kind in KINDS:  # one timed sample each, over every order of its topic
        (sample,) = report["samples"][kind]
        assert sample["count"] == ORDERS, kind
        assert sample["msgs_per_s"] > 0, kind
    assert set(report["ratios"]) == {spec.name for spec in RATIOS}
    assert all(value > 0 for value in report["ratios"].values())
    for spec in RATIOS:
        assert spec.name in done.stdout  # the printed table has every ratio
