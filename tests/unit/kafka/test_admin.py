"""An admin client must never be freed on its own librdkafka thread: librdkafka aborts the
process there. ``Admin`` is destroyed where it is closed, whatever still refers to it."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
import textwrap

import pytest

from orderproc.errors import BrokerError
from orderproc.kafka import access
from orderproc.kafka.clients import Admin

pytestmark = pytest.mark.unit

# A client left in a reference cycle with a request in flight (nothing listens on port 1,
# so the request fails after a second). Its future's callback runs on the client's own
# background thread and collects garbage there, as any allocation in a callback may.
SCRIPT = textwrap.dedent(
    """
    import gc, sys, time
    from confluent_kafka.admin import AdminClient, ConfigResource
    from orderproc.kafka.clients import Admin

    CONF = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}

    class Holder:
        pass

    def job(wrapped):
        holder = Holder()
        holder.me = holder  # only the cyclic collector frees it
        holder.admin = Admin(CONF) if wrapped else AdminClient(CONF)
        resource = ConfigResource("topic", "x")
        for future in holder.admin.describe_configs([resource], request_timeout=1).values():
            future.add_done_callback(lambda _f: gc.collect())
        if wrapped:
            holder.admin.close()  # what leaving ``with Admin(...)`` does

    job(sys.argv[1] == "wrapped")
    time.sleep(3)
    print("alive")
    """
)


def run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)),  # no core file
    )


def test_a_bare_admin_client_freed_on_its_own_thread_aborts_the_process() -> None:
    # Why Admin exists: if librdkafka stops aborting here, this test says so.
    bare = run("bare")
    assert bare.returncode == -6, bare  # SIGABRT
    assert "called from librdkafka owned thread" in bare.stderr


def test_an_admin_closed_where_it_was_used_survives_the_same_collection() -> None:
    wrapped = run("wrapped")
    assert wrapped.returncode == 0, wrapped.stderr[-2000:]
    assert wrapped.stdout.strip() == "alive"


def test_a_closed_admin_says_so_instead_of_reaching_a_destroyed_client() -> None:
    with Admin({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}) as admin:
        pass

    with pytest.raises(RuntimeError, match="closed"):
        admin.list_topics(timeout=0.1)


def test_connect_closes_its_client_when_the_broker_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Admin] = []

    class Recorded(Admin):
        def __init__(self, conf: dict[str, object]) -> None:
            super().__init__(conf)
            made.append(self)

    monkeypatch.setattr(access, "Admin", Recorded)

    with pytest.raises(BrokerError, match=r"cannot reach Kafka at 127\.0\.0\.1:1 "):
        access.connect({"bootstrap.servers": "127.0.0.1:1"}, 0.3)

    [admin] = made
    with pytest.raises(RuntimeError, match="closed"):
        admin.list_topics  # noqa: B018  # the attribute itself is refused once closed


def test_a_topic_limit_that_cannot_be_read_in_time_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from orderproc.config import Settings
    from orderproc.kafka.topics import max_message_bytes

    # Nothing listens on port 1: the describe call's future times out (it used to raise
    # TimeoutError out of the consumer's start instead of warning).
    settings = Settings(bootstrap_servers="127.0.0.1:1", admin_timeout_s=0.5)

    with caplog.at_level(logging.WARNING, logger="orderproc.kafka.topics"):
        assert max_message_bytes(settings, "orders_dlq", default=123_456) == 123_456

    assert "could not read max.message.bytes of orders_dlq (no answer in time)" in caplog.text
