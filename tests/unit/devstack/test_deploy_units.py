"""The systemd units and environment file in deploy/systemd/.

The units are read with configparser for what they promise (command, graceful stop,
unprivileged and hardened), and, where ``systemd-analyze`` exists, by systemd's own parser.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orderproc.cli import app as cli
from orderproc.config import RetryMode, Settings

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "systemd"
ENV_EXAMPLE = DEPLOY / "orderproc.env.example"
ENV_FILE = "/etc/orderproc/orderproc.env"

# The long-running orderproc sub-commands a unit may start.
SUBCOMMANDS = {("produce",), ("consume",), ("dlq", "tail")}
UNITS = {
    "orderproc-producer.service": ("produce",),
    "orderproc-consumer.service": ("consume",),
    "orderproc-dlq-monitor.service": ("dlq", "tail"),
}
DOCUMENTED_SETTINGS = {
    "BOOTSTRAP_SERVERS", "DATABASE_URL", "SECURITY_PROTOCOL", "SASL_MECHANISM",
    "SASL_USERNAME", "SASL_PASSWORD", "ORDERS_TOPIC", "DLQ_TOPIC", "CONSUMER_GROUP",
    "DLQ_GROUP", "RETRY_MODE", "MAX_ATTEMPTS", "PRICE_THRESHOLD", "METRICS_PORT", "LOG_JSON",
}  # fmt: skip


def _parse(text: str) -> configparser.ConfigParser:
    # strict=False: systemd allows repeated keys; interpolation off: `%` means specifiers.
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _unit(name: str) -> configparser.ConfigParser:
    return _parse((DEPLOY / name).read_text(encoding="utf-8"))


def _env_example() -> tuple[dict[str, str], set[str]]:
    """Active assignments, and the names of the ones left commented out."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip("#").strip()
        if not stripped.startswith("ORDERPROC_") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        if line.startswith("#"):
            commented.add(key)
        else:
            active[key] = value
    return active, commented


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_its_orderproc_subcommand(name: str) -> None:
    argv = shlex.split(_unit(name)["Service"]["ExecStart"])
    sub = UNITS[name]
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "orderproc"
    assert tuple(argv[1 : 1 + len(sub)]) == sub and sub in SUBCOMMANDS, argv
    # The real CLI parses the arguments (--help stops it before anything runs).
    assert CliRunner().invoke(cli, [*argv[1:], "--help"]).exit_code == 0, argv


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_stops_gracefully_and_restarts_on_failure(name: str) -> None:
    service = _unit(name)["Service"]
    assert service["Type"] == "simple"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 30
    assert service["Restart"] == "on-failure"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_unprivileged_and_hardened(name: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    assert service["User"] == "orderproc"
    assert service["EnvironmentFile"] == ENV_FILE
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == value, f"{name}: {key}={service.get(key)}"
    assert "network-online.target" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def _systemd_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root holding the host's standard units, ``units`` and a stub ExecStart binary."""
    system_units = Path("/usr/lib/systemd/system")
    if shutil.which("systemd-analyze") is None or not system_units.is_dir():
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / system_units.relative_to("/"), symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name, text in units.items():
        (etc / name).write_text(text, encoding="utf-8")
        binary = root / shlex.split(_parse(text)["Service"]["ExecStart"])[0].lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return root


def _verify(root: Path, names: list[str]) -> str:
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # systemd exits 0 on settings it ignores; its warnings are the verdict.
    return f"{result.returncode}\n{result.stdout}{result.stderr}".strip()


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    units = {name: (DEPLOY / name).read_text(encoding="utf-8") for name in UNITS}
    assert _verify(_systemd_root(tmp_path, units), sorted(units)) == "0"


def test_systemd_analyze_reports_a_broken_unit(tmp_path: Path) -> None:
    # Proves the check above can fail: systemd ignores an unknown setting with a warning only.
    name = "orderproc-producer.service"
    text = (DEPLOY / name).read_text(encoding="utf-8")
    broken = text.replace("KillSignal=SIGTERM", "KillSignal=SIGTERN")
    assert "SIGTERN" in _verify(_systemd_root(tmp_path, {name: broken}), [name])


def test_env_example_lists_the_documented_settings() -> None:
    active, commented = _env_example()
    names = {key.removeprefix("ORDERPROC_") for key in {*active, *commented}}
    assert names >= DOCUMENTED_SETTINGS


def test_env_example_names_are_settings_fields() -> None:
    active, commented = _env_example()
    unknown = {
        key
        for key in {*active, *commented}
        if key.removeprefix("ORDERPROC_").lower() not in Settings.model_fields
    }
    assert unknown == set()


def test_env_example_is_a_valid_configuration() -> None:
    active, _ = _env_example()
    values = {k.removeprefix("ORDERPROC_").lower(): v for k, v in active.items()}
    settings = Settings.model_validate(values)
    assert settings.retry_mode in set(RetryMode)
    # Without a database URL the workers would write SQLite under a read-only /opt.
    assert settings.database_url and settings.database_url.startswith("postgresql")


def test_env_example_leaves_unused_settings_commented_out() -> None:
    # An empty value is still a value: `ORDERPROC_SASL_MECHANISM=` would reach librdkafka.
    active, _ = _env_example()
    assert all(value.strip() for value in active.values()), active
