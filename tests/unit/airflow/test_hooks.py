"""The Kafka clients the DAG tasks build from ``kafka_default``: each kind gets only its
own keys (librdkafka warns about every foreign one) and reports through logging, quietly."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from orderproc.airflow.hooks import DrainConsumerHook, ReplayProducerHook, _on_error
from orderproc.config import Settings
from orderproc.errors import BrokerError
from orderproc.logs import LIBRDKAFKA_LOG, LibrdkafkaLog

pytestmark = pytest.mark.unit

CONNECTION = {
    "bootstrap.servers": "127.0.0.1:1",
    "group.id": "orderproc-airflow",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 45000,
    "acks": "all",
    "linger.ms": 5,
}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The configs the access check and the client constructors were given."""
    seen: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(
        "orderproc.airflow.hooks.check_access",
        lambda conf, access, timeout: seen.setdefault("checked", dict(conf)),
    )
    for kind in ("produce.Producer", "consume.Consumer"):
        monkeypatch.setattr(
            f"airflow.providers.apache.kafka.hooks.{kind}",
            lambda conf: seen.setdefault("client", dict(conf)),
        )
    return seen


def test_the_replay_producer_gets_no_consumer_keys(built: dict[str, dict[str, Any]]) -> None:
    ReplayProducerHook(Settings(), "kafka_default")._get_client(dict(CONNECTION))

    client = built["client"]
    assert not [k for k in client if k.startswith(("group.", "enable.auto", "auto.", "session."))]
    assert client["transactional.id"].startswith("orderproc-replay-")
    assert client["logger"] is LIBRDKAFKA_LOG
    assert client["error_cb"] is _on_error  # not the provider's print()
    assert "group.id" not in built["checked"]  # checked as it is built


def test_the_drain_consumer_gets_no_producer_keys_and_keeps_a_named_error_callback(
    built: dict[str, dict[str, Any]],
) -> None:
    def mine(err: Any) -> None: ...

    DrainConsumerHook(Settings(dlq_group="g"), "kafka_default")._get_client(
        {**CONNECTION, "error_cb": mine}
    )

    client = built["client"]
    assert "acks" not in client and "linger.ms" not in client
    assert client["group.id"] == "g.drain" and client["enable.auto.commit"] is False
    assert client["error_cb"] is mine


class _Error:
    def __init__(self, code: int, text: str) -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._text


def test_client_errors_are_logged_once_then_quietly(caplog: pytest.LogCaptureFixture) -> None:
    adapter = LibrdkafkaLog(name="test.librdkafka")
    refused = _Error(-195, "127.0.0.1:1/bootstrap: Connect failed: Connection refused")
    down = _Error(-187, "1/1 brokers are down")

    with caplog.at_level(logging.DEBUG, logger="test.librdkafka"):
        for _ in range(60):
            adapter.error(refused)
        adapter.error(down)

    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert shown == [
        "librdkafka error: 127.0.0.1:1/bootstrap: Connect failed: Connection refused",
        "librdkafka error: 1/1 brokers are down",
    ]
    assert len(caplog.records) == 61  # the repeats are there, at DEBUG


def test_refused_credentials_stop_the_job_other_errors_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from confluent_kafka import KafkaError

    with pytest.raises(BrokerError, match="Kafka refused the connection's credentials"):
        _on_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    with caplog.at_level(logging.WARNING, logger="orderproc.librdkafka"):
        _on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert [r.getMessage() for r in caplog.records][-1:] == [
        "librdkafka error: 1/1 brokers are down"
    ]
