"""deploy/prometheus: promtool accepts the config and rules, and its unit tests show every
alert firing where it must and staying quiet where it must not (offline, no server)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderproc.dlq.watch import UNDRAINED_LIMIT_S
from orderproc.models import REVIEW_SLO_HOURS

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
ALERTS: dict[str, dict[str, Any]] = {
    rule["alert"]: rule
    for group in yaml.safe_load((HERE / "rules" / "alerts.yml").read_text())["groups"]
    for rule in group["rules"]
}
TESTS = yaml.safe_load((HERE / "tests" / "alerts_test.yml").read_text())["tests"]

ISSUE_ALERTS = {
    "ConsumerDown",
    "ConsumerLagGrowing",
    "DlqInflowSpike",
    "FloodBreakerOpen",
    "DeadLettersNotDrained",
    "ReviewBacklogOverSlo",
    "ReplayedOrdersFailingAgain",
}
"""What operators are told about, as issue 17 lists it."""


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed (scripts/ensure-packages.sh installs prometheus)"
    return subprocess.run(
        [exe, *args], cwd=HERE, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_config_and_its_rule_files() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout


def test_promtool_accepts_the_rules() -> None:
    done = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", "tests/alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_the_issue_asks_for_exists() -> None:
    assert set(ALERTS) >= ISSUE_ALERTS


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_says_what_to_do(name: str) -> None:
    rule = ALERTS[name]
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    assert len(rule["annotations"]["runbook"]) > 60


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_is_tested_firing_and_quiet(name: str) -> None:
    cases = [c for test in TESTS for c in test.get("alert_rule_test", []) if c["alertname"] == name]
    assert any(c["exp_alerts"] for c in cases), f"{name}: no case where it fires"
    assert any(not c["exp_alerts"] for c in cases), f"{name}: no case where it stays quiet"


def test_the_alert_thresholds_are_the_ones_the_code_uses() -> None:
    assert ALERTS["ReviewBacklogOverSlo"]["expr"].endswith(f"> {int(REVIEW_SLO_HOURS * 3600)}")
    assert ALERTS["DeadLettersNotDrained"]["expr"].endswith(f"> {int(UNDRAINED_LIMIT_S)}")


def test_each_scrape_target_is_the_port_its_worker_serves() -> None:
    compose = yaml.safe_load((HERE.parents[1] / "docker-compose.yml").read_text())["services"]
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        if not job["job_name"].startswith("orderproc-"):
            continue
        (target,) = job["static_configs"][0]["targets"]
        host, port = target.split(":")
        command = compose[host]["command"]
        assert command[command.index("--metrics-port") + 1] == port, job["job_name"]
        unit = (HERE.parent / "systemd" / f"{host}.service").read_text()
        assert f"--metrics-port {port}" in unit, f"{host}.service serves another port"
