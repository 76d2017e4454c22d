"""Settings: the original system's defaults, ORDERPROC_* overrides, and the librdkafka dict."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pydantic
import pytest
from pydantic import SecretStr

from devstack.settings import DevstackSettings
from orderproc.config import RetryMode, Settings, WireFormat
from orderproc.logs import LIBRDKAFKA_LOG, LibrdkafkaLog

pytestmark = pytest.mark.unit

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _no_orderproc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the ORDERPROC_* variables it sets itself."""
    for name in list(os.environ):
        if name.startswith("ORDERPROC_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_original_system() -> None:
    s = Settings()

    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert (s.orders_topic, s.dlq_topic) == ("orders", "orders_dlq")
    assert (s.consumer_group, s.dlq_group) == ("order-group", "dlq-group")
    assert s.price_threshold == 100.0
    assert s.max_attempts == 3
    assert s.retry_mode is RetryMode.NON_BLOCKING


def test_settings_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings().max_attempts = 9  # type: ignore[misc]


def test_environment_overrides_use_the_orderproc_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERPROC_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("ORDERPROC_ORDERS_TOPIC", "orders-eu")
    monkeypatch.setenv("ORDERPROC_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("ORDERPROC_PRICE_THRESHOLD", "250.5")
    monkeypatch.setenv("ORDERPROC_RETRY_MODE", "blocking")
    monkeypatch.setenv("ORDERPROC_LOG_JSON", "true")
    monkeypatch.setenv("ORDERPROC_DATA_DIR", "/var/lib/orderproc")

    s = Settings()

    assert s.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.orders_topic == "orders-eu"
    assert s.max_attempts == 5
    assert s.price_threshold == 250.5
    assert s.retry_mode is RetryMode.BLOCKING
    assert s.log_json is True
    assert s.data_dir == Path("/var/lib/orderproc")


def test_dev_stack_settings_are_not_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERPROC_DEVSTACK_DIR", "/srv/dev")
    monkeypatch.setenv("ORDERPROC_KAFKA_PORT", "19092")

    dev = DevstackSettings()

    assert (dev.devstack_dir, dev.kafka_port, dev.bootstrap) == (
        Path("/srv/dev"),
        19092,
        "127.0.0.1:19092",
    )
    dev_only = {"devstack_dir", "kafka_port", "kafka_controller_port", "kafka_start_timeout_s"}
    assert dev_only.isdisjoint(Settings.model_fields)


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", "9")
    monkeypatch.setenv("ORDERS_TOPIC", "wrong")

    s = Settings()

    assert (s.max_attempts, s.orders_topic) == (3, "orders")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORDERPROC_MAX_ATTEMPTS", "0"),
        ("ORDERPROC_MAX_ATTEMPTS", "three"),
        ("ORDERPROC_RETRY_MODE", "sometimes"),
        ("ORDERPROC_BACKOFF_JITTER", "1.5"),
        ("ORDERPROC_FLOOD_RATIO", "0"),
        ("ORDERPROC_BOOTSTRAP_SERVERS", "  "),
    ],
)
def test_invalid_environment_value_is_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_secret_from_the_environment_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERPROC_SASL_PASSWORD", PASSWORD)

    s = Settings()

    assert isinstance(s.sasl_password, SecretStr)
    assert s.sasl_password.get_secret_value() == PASSWORD


# -- kafka_config ----------------------------------------------------------------------


def test_plaintext_kafka_config_has_no_sasl_or_ssl_keys() -> None:
    conf = Settings().kafka_config()

    assert conf.pop("logger") is LIBRDKAFKA_LOG  # librdkafka's lines go through logging
    assert conf == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}


def test_sasl_ssl_kafka_config_carries_every_set_option_as_plain_text() -> None:
    s = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="orders-app",
        sasl_password=SecretStr(PASSWORD),
        ssl_ca_location="/etc/ssl/ca.pem",
        ssl_certificate_location="/etc/ssl/client.pem",
        ssl_key_location="/etc/ssl/client.key",
        ssl_key_password=SecretStr("key-pass"),
    )

    conf = s.kafka_config()
    conf.pop("logger")

    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "orders-app",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "ssl.certificate.location": "/etc/ssl/client.pem",
        "ssl.key.location": "/etc/ssl/client.key",
        "ssl.key.password": "key-pass",
    }


def test_only_the_ssl_options_that_are_set_are_passed() -> None:
    conf = Settings(security_protocol="SSL", ssl_ca_location="/etc/ssl/ca.pem").kafka_config()
    conf.pop("logger")

    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SSL",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_kafka_config_overrides_win() -> None:
    conf = Settings().kafka_config(**{"group.id": "g", "security.protocol": "SSL"})

    assert conf["group.id"] == "g"
    assert conf["security.protocol"] == "SSL"


def test_passwords_never_appear_in_repr_str_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERPROC_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("ORDERPROC_SSL_KEY_PASSWORD", "key-pass")

    s = Settings()

    for text in (repr(s), str(s), s.model_dump_json()):
        assert PASSWORD not in text
        assert "key-pass" not in text


# -- derived values --------------------------------------------------------------------


def test_retry_topics_cover_every_attempt_but_the_last() -> None:
    assert Settings().retry_topics == ["orders.retry.1", "orders.retry.2"]
    assert Settings(max_attempts=1).retry_topics == []
    assert Settings(retry_topic_prefix="o.r", max_attempts=4).retry_topics == [
        "o.r.1",
        "o.r.2",
        "o.r.3",
    ]


def test_default_files_live_in_the_users_data_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    s = Settings()

    assert s.data_dir == tmp_path / ".local" / "share" / "orderproc"
    assert s.effective_database_url == f"sqlite:///{s.data_dir / 'orderproc.db'}"
    assert s.effective_reports_dir == s.data_dir / "reports"


def test_xdg_data_home_moves_the_default_data_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    assert (
        Settings().effective_database_url
        == f"sqlite:///{tmp_path / 'xdg' / 'orderproc' / 'orderproc.db'}"
    )


def test_data_dir_and_reports_dir_settings_win() -> None:
    custom = Settings(data_dir=Path("/srv/orderproc"))
    assert custom.effective_database_url == "sqlite:////srv/orderproc/orderproc.db"
    assert custom.effective_reports_dir == Path("/srv/orderproc/reports")
    reports = Settings(data_dir=Path("/srv/orderproc"), reports_dir=Path("/var/reports"))
    assert reports.effective_reports_dir == Path("/var/reports")


def test_explicit_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://orderproc@db:5432/orderproc"
    monkeypatch.setenv("ORDERPROC_DATABASE_URL", url)

    assert Settings().effective_database_url == url


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_float_setting_must_be_finite(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ORDERPROC_BACKOFF_INITIAL_S", value)

    with pytest.raises(pydantic.ValidationError, match="finite"):
        Settings()


def test_the_default_broker_never_follows_a_dev_stack_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERPROC_KAFKA_PORT", "19092")  # the dev stack's, not production's

    assert Settings().bootstrap_servers == "127.0.0.1:9092"
    monkeypatch.setenv("ORDERPROC_BOOTSTRAP_SERVERS", "kafka:9092")
    assert Settings().bootstrap_servers == "kafka:9092"


def test_replication_defaults_fit_one_broker_and_min_isr_cannot_exceed_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (1, 1)
    monkeypatch.setenv("ORDERPROC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("ORDERPROC_MIN_INSYNC_REPLICAS", "2")
    assert (Settings().replication_factor, Settings().min_insync_replicas) == (3, 2)
    monkeypatch.setenv("ORDERPROC_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(pydantic.ValidationError, match="must not exceed ORDERPROC_REPLICATION"):
        Settings()


class _Records:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, *args: object) -> None:
        self.seen.append((level, msg % args))


def test_librdkafka_lines_are_logged_once_then_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = LibrdkafkaLog()
    sink = _Records()
    monkeypatch.setattr(adapter, "_log", sink)
    line = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"

    for _ in range(50):
        adapter.log(logging.ERROR, "%s [%s] %s: %s", "FAIL", "rdkafka#producer-1", line)

    levels = [level for level, _ in sink.seen]
    assert levels[0] == logging.WARNING  # the client retries by itself: not an error yet
    assert levels[1:] == [logging.DEBUG] * 49
    assert "Connection refused" in sink.seen[0][1]


def test_deliveries_wait_out_a_broker_restart_rather_than_fail_after_30s() -> None:
    from orderproc.kafka.clients import reliable_producer_config

    settings = Settings()

    # A 15 s broker restart plus librdkafka's reconnect backoff exceeded the old 30 s and
    # lost orders; several minutes of queueing ride it out (bounded by librdkafka's queue).
    assert settings.delivery_timeout_ms == 300_000
    assert reliable_producer_config(settings)["delivery.timeout.ms"] == 300_000


def test_an_idempotent_producer_keeps_one_request_in_flight_and_a_transactional_one_five() -> None:
    from orderproc.kafka.clients import reliable_producer_config, transactional_producer_config

    settings = Settings()
    key = "max.in.flight.requests.per.connection"

    # librdkafka #4953: behind a failed request, a bumped epoch resends written batches.
    assert reliable_producer_config(settings)[key] == 1
    assert reliable_producer_config(settings, **{key: 5})[key] == 5  # a caller may choose
    assert key not in transactional_producer_config(settings)  # librdkafka's 5: aborts instead


@pytest.mark.parametrize(
    ("delivery_ms", "transaction_ms", "expected_ms"),
    [(300_000, 60_000, 60_000), (20_000, 60_000, 20_000)],
)
def test_a_transactional_record_never_outlives_its_transaction(
    delivery_ms: int, transaction_ms: int, expected_ms: int
) -> None:
    from confluent_kafka import Producer

    from orderproc.kafka.clients import replay_producer_config, transactional_producer_config

    settings = Settings(delivery_timeout_ms=delivery_ms, transaction_timeout_ms=transaction_ms)

    for config in (transactional_producer_config(settings), replay_producer_config(settings)):
        assert config["delivery.timeout.ms"] == expected_ms
        # librdkafka refuses a delivery timeout above the transaction timeout when the
        # client is built (no broker needed): the exactly-once consumer would not start.
        Producer(config).flush(0)


def test_the_wire_format_follows_the_registry_url_and_registry_needs_one() -> None:
    assert Settings().effective_wire_format is WireFormat.SCHEMALESS  # the original system's
    with_url = Settings(schema_registry_url="https://reg.example/apis/ccompat/v7")
    assert with_url.effective_wire_format is WireFormat.REGISTRY
    told = Settings(schema_registry_url="https://reg.example", wire_format="schemaless")
    assert told.effective_wire_format is WireFormat.SCHEMALESS
    with pytest.raises(pydantic.ValidationError, match="needs ORDERPROC_SCHEMA_REGISTRY_URL"):
        Settings(wire_format="registry")


def test_the_registry_password_is_masked_wherever_settings_are_shown() -> None:
    settings = Settings(schema_registry_username="bob", schema_registry_password="s3cret")

    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
