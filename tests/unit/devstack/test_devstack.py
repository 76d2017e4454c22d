"""Devstack logic that needs no broker: config text, port checks, tool lookup, pid files."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import maven, postgres
from devstack.kafka import KafkaBroker, KafkaStatus
from devstack.kafka_config import (
    check_ports_free,
    new_cluster_id,
    render_server_properties,
)
from devstack.postgres import PostgresStatus, database_url
from devstack.process import port_in_use, tail
from devstack.settings import KAFKA_VERSION, DevstackError, DevstackSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def listener() -> Iterator[int]:
    """A port held by a listening socket of our own, like another server would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_server_properties_are_loopback_only_with_static_voter(tmp_path: Path) -> None:
    props = _props(render_server_properties(port=19092, controller_port=19093, data_dir=tmp_path))

    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path)
    assert "controller.quorum.bootstrap.servers" not in props


def test_server_properties_let_one_node_hold_internal_topics(tmp_path: Path) -> None:
    props = _props(render_server_properties(port=1, controller_port=2, data_dir=tmp_path))

    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_port_taken_by_a_listener_is_detected(listener: int) -> None:
    assert port_in_use(listener)
    with pytest.raises(DevstackError, match=rf"127\.0\.0\.1:{listener} \(kafka_port\)"):
        check_ports_free(listener, _free_port())


def test_taken_controller_port_is_named_in_the_error(listener: int) -> None:
    with pytest.raises(DevstackError, match="kafka_controller_port"):
        check_ports_free(_free_port(), listener)


def test_free_ports_pass_and_equal_ports_are_refused() -> None:
    port = _free_port()
    assert not port_in_use(port)
    with pytest.raises(DevstackError, match="must differ"):
        check_ports_free(port, port)


def test_missing_java_is_a_clear_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "java" else real_which(name)
    )
    broker = KafkaBroker(DevstackSettings(devstack_dir=tmp_path))

    with pytest.raises(DevstackError) as info:
        broker.up()

    message = str(info.value)
    assert "`java` not found on PATH" in message
    assert "\n" not in message
    assert not (tmp_path / "kafka.pid").exists()


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    (tmp_path / "kafka.pid").write_text(gone.stdout)
    broker = KafkaBroker(DevstackSettings(devstack_dir=tmp_path, kafka_port=_free_port()))

    status = broker.status()

    assert not status.running
    assert not (tmp_path / "kafka.pid").exists()
    assert broker.down() is None


def test_pid_of_an_unrelated_process_is_never_treated_as_the_broker(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            (tmp_path / "kafka.pid").write_text(f"{other.pid}\n")
            broker = KafkaBroker(DevstackSettings(devstack_dir=tmp_path))

            assert broker.down() is None
            assert other.poll() is None, "down() must not signal a process it did not start"
        finally:
            other.kill()


def test_cluster_ids_have_kafkas_form() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) and not i.startswith("-") for i in ids)


def test_pom_default_matches_the_project_kafka_version() -> None:
    pom = maven.POM.read_text()

    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    # Kafka 4.4 logs through SLF4J 2: its log4j binding, and slf4j-api 2.x pinned (Maven
    # would otherwise pick 1.7.36 and the broker would log nothing).
    assert "log4j-slf4j2-impl" in pom and "log4j-slf4j-impl<" not in pom
    assert "<slf4j.version>2.0.17</slf4j.version>" in pom
    assert re.search(r"maven-dependency-plugin</artifactId>\s*<version>[\d.]+</version>", pom)


def test_the_jar_list_names_this_kafka_version_and_the_slf4j_2_binding() -> None:
    jars = maven.expected_jars()

    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in jars
    assert {"slf4j-api-2.0.17.jar", "log4j-slf4j2-impl-2.24.3.jar"} <= set(jars)
    assert not [j for j in jars if j.startswith("slf4j-api-1.")]
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in jars.values())


def test_a_fetch_that_differs_from_the_jar_list_is_refused_in_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "jars.sha256"
    good, bad = b"jar one", b"jar two"
    digest = hashlib.sha256(good).hexdigest()
    manifest.write_text(f"# comment\n{digest}  a-1.jar\n{digest}  b-1.jar\n")
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "a-1.jar").write_bytes(good)
    (libs / "c-1.jar").write_bytes(good)

    with pytest.raises(DevstackError, match=r"unexpected c-1\.jar; missing b-1\.jar") as missing:
        maven.check_jars(libs, manifest)
    (libs / "c-1.jar").unlink()
    (libs / "b-1.jar").write_bytes(bad)
    with pytest.raises(DevstackError, match=r"b-1\.jar does not match its SHA-256") as changed:
        maven.check_jars(libs, manifest)
    (libs / "b-1.jar").write_bytes(good)
    maven.check_jars(libs, manifest)  # exactly the list: accepted
    assert all("\n" not in str(e.value) for e in (missing, changed))


def test_libs_dir_defaults_under_devstack_and_can_be_shared(tmp_path: Path) -> None:
    own = KafkaBroker(DevstackSettings(devstack_dir=tmp_path))
    shared = KafkaBroker(DevstackSettings(devstack_dir=tmp_path), libs_dir=tmp_path / "cache")

    assert own.paths.libs == tmp_path / f"kafka-{KAFKA_VERSION}" / "libs"
    assert shared.paths.libs == tmp_path / "cache"
    assert shared.paths.data == tmp_path / "kafka-data"


def test_jars_are_not_ready_without_the_marker(tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").write_bytes(b"")

    assert not maven.jars_ready(libs)


def test_maven_error_line_skips_colour_codes_and_boilerplate() -> None:
    output = (
        "\x1b[0m\x1b[0m\n"
        "\x1b[0m\x1b[0m[ERROR] Failed to execute goal on project x: Could not resolve deps\n"
        "[ERROR] \n"
        "[ERROR] Re-run Maven using the -X switch to enable full debug logging.\n"
        "[ERROR] [Help 1] http://example.invalid/DependencyResolutionException\n"
    )

    line = maven.maven_error_line(output)

    assert line == "Failed to execute goal on project x: Could not resolve deps"


def test_log_tail_returns_last_non_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "kafka.out"
    log.write_text("".join(f"line {i}\n\n" for i in range(30)))

    assert tail(log, 3) == ["line 27", "line 28", "line 29"]
    assert tail(tmp_path / "missing.out") == []


def test_status_lines_read_well() -> None:
    up = KafkaStatus(running=True, ready=True, pid=123, bootstrap="127.0.0.1:9092")
    down = KafkaStatus(running=False, ready=False, pid=None, bootstrap="127.0.0.1:9092")
    pg = PostgresStatus(version="15", running=True, port=5432, url=database_url())

    assert up.describe() == f"kafka {KAFKA_VERSION} running pid=123 bootstrap=127.0.0.1:9092"
    assert down.describe() == f"kafka {KAFKA_VERSION} stopped bootstrap=127.0.0.1:9092"
    assert pg.describe().startswith("postgres 15 running port=5432 url=postgresql+psycopg://")
    assert database_url() == "postgresql+psycopg://orderproc:orderproc@127.0.0.1:5432/orderproc"


def test_postgres_missing_without_root_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postgres, "installed_version", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(DevstackError, match=r"not installed.*apt-get install -y postgresql"):
        postgres.postgres_up()


def test_postgres_start_without_root_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "installed_version", lambda: "15")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(DevstackError, match="must run as root"):
        postgres.postgres_up()


def test_missing_maven_is_a_clear_error_when_jars_are_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "mvn" else real_which(name)
    )

    with pytest.raises(DevstackError, match="`mvn` not found on PATH"):
        maven.fetch_kafka_jars(tmp_path / "libs")
