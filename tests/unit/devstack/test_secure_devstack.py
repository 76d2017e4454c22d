"""The secured devstack's pure parts: certificates, passwords, server keys, ACLs, settings."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from cryptography import x509

from devstack.airflow import kafka_connection
from devstack.kafka import KafkaStatus
from devstack.kafka_secure import SecureKafkaBroker
from devstack.kafka_security import (
    Credentials,
    app_acls,
    client_env,
    client_settings,
    export_lines,
    server_overrides,
)
from devstack.settings import KAFKA_VERSION, DevstackError, DevstackSettings
from devstack.tls import TlsFiles, ensure_tls
from orderproc.config import Settings

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_broker_certificate_names_loopback_and_chains_to_the_ca(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls")

    keystore = files.keystore.read_text()
    leaf, ca = x509.load_pem_x509_certificates(files.keystore.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8: Kafka's PEM keystore
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca == x509.load_pem_x509_certificate(files.ca.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert (mode(files.keystore), mode(files.ca_key)) == (0o600, 0o600)


def test_certificates_are_kept_across_starts_and_renewed_near_expiry(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path)
    first_ca, first_keystore = files.ca.read_bytes(), files.keystore.read_bytes()

    ensure_tls(tmp_path)
    assert (files.ca.read_bytes(), files.keystore.read_bytes()) == (first_ca, first_keystore)

    leaf = x509.load_pem_x509_certificate(files.keystore.read_bytes())
    assert leaf.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)
    files.keystore.write_text("not a certificate")
    ensure_tls(tmp_path)
    assert files.ca.read_bytes() == first_ca  # clients keep trusting the same CA
    assert files.keystore.read_bytes() != first_keystore


def test_passwords_are_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"

    made = Credentials.load_or_create(path)

    assert Credentials.load_or_create(path) == made
    assert mode(path) == 0o600
    assert len(set(made.secrets())) == 3 and all(len(p) >= 24 for p in made.secrets())
    path.write_text("{}")
    with pytest.raises(DevstackError, match=r"credentials\.json is unreadable"):
        Credentials.load_or_create(path)


def test_the_secured_listener_is_sasl_ssl_and_the_controller_is_not_anonymous() -> None:
    creds = Credentials("adm-pw", "app-pw", "ctl-pw")

    props = server_overrides(port=9094, controller_port=9095, tls=TlsFiles(Path("/t")),
                             creds=creds)  # fmt: skip

    assert props["listeners"] == "SASL_SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:9094"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["super.users"] == "User:admin;User:controller"  # no User:ANONYMOUS
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert (
        'username="admin" password="adm-pw"'
        in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    )
    assert "app-pw" not in json.dumps(props)  # the app's password is never the broker's
    assert props["ssl.keystore.location"] == "/t/broker.pem"
    assert props["ssl.truststore.location"] == "/t/ca.pem"


def test_orderproc_may_use_exactly_its_topics_groups_and_transactional_ids() -> None:
    acls = app_acls(Settings())

    granted = {
        (b.restype, b.name, b.resource_pattern_type, b.operation)
        for b in acls
        if b.principal == "User:orderproc" and b.host == "*"
    }
    t, g, x = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    r, w = AclOperation.READ, AclOperation.WRITE
    assert len(granted) == len(acls)
    assert granted == {
        (t, "orders", lit, r), (t, "orders", lit, w),
        (t, "orders.retry.", pre, r), (t, "orders.retry.", pre, w),
        (t, "orders_dlq", lit, r), (t, "orders_dlq", lit, w),
        (t, "orders_dlq", lit, AclOperation.DESCRIBE_CONFIGS),
        (g, "order-group", lit, r), (g, "dlq-group", lit, r), (g, "dlq-group.drain", lit, r),
        (x, "orderproc-", pre, w), (x, "orderproc-", pre, AclOperation.DESCRIBE),
    }  # fmt: skip


def test_the_printed_settings_configure_orderproc_and_leave_out_the_admin(tmp_path: Path) -> None:
    creds = Credentials("adm-pw", "app pw'x", "ctl-pw")
    env = client_env("127.0.0.1:9094", TlsFiles(tmp_path), creds)

    lines = export_lines(env)

    assert lines == [
        "export ORDERPROC_BOOTSTRAP_SERVERS=127.0.0.1:9094",
        "export ORDERPROC_SECURITY_PROTOCOL=SASL_SSL",
        "export ORDERPROC_SASL_MECHANISM=SCRAM-SHA-512",
        "export ORDERPROC_SASL_USERNAME=orderproc",
        "export ORDERPROC_SASL_PASSWORD='app pw'\"'\"'x'",
        f"export ORDERPROC_SSL_CA_LOCATION={tmp_path / 'ca.pem'}",
    ]
    script = "\n".join([*lines, 'printf %s "$ORDERPROC_SASL_PASSWORD"'])
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert shell.stdout == "app pw'x"
    assert not any("adm-pw" in line or "ctl-pw" in line for line in lines)


def test_the_airflow_connection_carries_the_password_and_the_ca(tmp_path: Path) -> None:
    settings = client_settings(Settings(), "127.0.0.1:9094", TlsFiles(tmp_path), "orderproc", "pw")

    extra = json.loads(kafka_connection(settings))["extra"]

    assert extra["security.protocol"] == "SASL_SSL"
    assert (extra["sasl.mechanism"], extra["sasl.username"]) == ("SCRAM-SHA-512", "orderproc")
    assert extra["sasl.password"] == "pw"
    assert extra["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert "logger" not in extra


def test_the_secured_broker_lives_in_its_own_folder_and_says_so(tmp_path: Path) -> None:
    broker = SecureKafkaBroker(DevstackSettings(devstack_dir=tmp_path), app=Settings())
    status = KafkaStatus(running=True, ready=True, pid=7, bootstrap="127.0.0.1:9092",
                         security=broker.security)  # fmt: skip

    assert broker.paths.data == tmp_path / "kafka-secure" / "kafka-data"
    assert broker.paths.libs == tmp_path / f"kafka-{KAFKA_VERSION}" / "libs"  # shared jars
    assert status.describe() == (
        f"kafka {KAFKA_VERSION} running pid=7 bootstrap=127.0.0.1:9092 security=SASL_SSL"
    )
    assert broker.running_pid() is None
