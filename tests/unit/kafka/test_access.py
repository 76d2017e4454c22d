"""The access check's words: one line per refusal, naming the cause, never a password."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from orderproc.config import Settings
from orderproc.kafka.access import (
    Access,
    connection_config,
    consumer_access,
    drain_access,
    monitor_access,
    producer_access,
    refusal,
)
from orderproc.kafka.clients import ACCESS_ERRORS, refuses_access, refuses_record

pytestmark = pytest.mark.unit

PASSWORD = "s3cret-Pa55word"
CONF = {
    "bootstrap.servers": "127.0.0.1:9094",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "orderproc",
    "sasl.password": PASSWORD,
    "ssl.ca.location": "/dev/ca.pem",
    "group.id": "order-group",
    "enable.auto.commit": False,
}
PREFIX = "sasl_ssl://127.0.0.1:9094/bootstrap: "


def err(code: int, text: str, *, fatal: bool = False) -> KafkaError:
    return KafkaError(code, text, fatal=fatal)


REFUSALS = [
    (
        err(
            KafkaError._AUTHENTICATION,
            PREFIX + "SASL authentication error: Authentication "
            "failed during authentication due to invalid credentials with SASL mechanism "
            "SCRAM-SHA-512 (after 311ms in state AUTH_REQ)",
        ),
        "wrong credentials: Kafka at 127.0.0.1:9094 rejected user 'orderproc' (SCRAM-SHA-512)",
    ),
    (
        err(
            KafkaError._AUTHENTICATION,
            PREFIX + "SASL SCRAM-SHA-256 mechanism handshake "
            "failed: Broker: Unsupported SASL mechanism",
        ),
        "authentication failed: Kafka at 127.0.0.1:9094 refused user 'orderproc': "
        "SASL SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL mechanism",
    ),
    (
        err(
            KafkaError._SSL,
            PREFIX + "SSL handshake failed: error:0A000086:SSL routines::"
            "certificate verify failed: broker certificate could not be verified",
        ),
        "untrusted broker certificate: Kafka at 127.0.0.1:9094 presented a certificate "
        "that the CA in ssl.ca.location (/dev/ca.pem) did not sign",
    ),
    (
        err(KafkaError._SSL, PREFIX + "SSL handshake failed: unexpected eof while reading"),
        "TLS handshake with Kafka at 127.0.0.1:9094 failed: "
        "SSL handshake failed: unexpected eof while reading",
    ),
    (
        err(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed"),
        "not authorized: Kafka at 127.0.0.1:9094 refused user 'orderproc': "
        "Broker: Topic authorization failed",
    ),
    (
        err(KafkaError._FATAL, "Fatal error: producer fenced", fatal=True),
        "fatal Kafka client error: Fatal error: producer fenced",
    ),
]


@pytest.mark.parametrize(("error", "line"), REFUSALS)
def test_each_refusal_is_one_line_naming_its_cause(error: KafkaError, line: str) -> None:
    said = refusal(error, CONF)

    assert said == line
    assert "\n" not in line and PASSWORD not in line


def test_an_untrusted_certificate_without_a_ca_setting_names_the_systems_cas() -> None:
    conf = {k: v for k, v in CONF.items() if k != "ssl.ca.location"}
    error = err(KafkaError._SSL, PREFIX + "SSL handshake failed: certificate verify failed")

    assert refusal(error, conf) == (
        "untrusted broker certificate: Kafka at 127.0.0.1:9094 presented a certificate "
        "that the system's CAs did not sign"
    )


def test_a_broker_that_is_merely_down_is_not_a_refusal() -> None:
    down = err(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:9094 failed: Connection refused")

    assert refusal(down, CONF) is None
    assert refusal(err(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"), CONF) is None


def test_authorization_errors_are_never_a_records_refusal() -> None:
    for code in ACCESS_ERRORS:
        error = err(code, "refused")
        assert refuses_access(error) and not refuses_record(error)
    assert not refuses_access(err(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
    assert not refuses_access(None)


def test_the_probe_keeps_only_where_and_who_we_are() -> None:
    kept = connection_config(
        {**CONF, "logger": object(), "error_cb": print, "socket.timeout.ms": 1}
    )

    assert set(kept) == {
        "bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.username",
        "sasl.password", "ssl.ca.location", "socket.timeout.ms",
    }  # fmt: skip


def test_each_job_asks_for_exactly_what_it_does() -> None:
    s = Settings(max_attempts=3)

    assert producer_access(s) == Access(write=("orders",), orders="write")
    assert consumer_access(s) == Access(
        read=("orders", "orders.retry.1", "orders.retry.2"),
        write=("orders.retry.1", "orders.retry.2", "orders_dlq"),
        groups=("order-group",),
        orders="read",  # the registry is checked too, on its wire format
    )
    assert monitor_access(s) == Access(read=("orders_dlq",), groups=("dlq-group",))
    assert drain_access(s) == Access(read=("orders_dlq",), groups=("dlq-group.drain",))
