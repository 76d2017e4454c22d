"""A header name that is not UTF-8 is reported, never a crash, however warm the reader is.

confluent-kafka hands such headers back as a list with a NULL name and an exception
set; once CPython has specialized a plain ``msg.headers()`` call site, that list is
handed out unchecked and touching it segfaults. The check runs in a child process,
so a regression fails this test instead of killing the test run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from orderproc.headers import UNREADABLE

pytestmark = pytest.mark.integration

READER = """
import sys, time
from confluent_kafka import Consumer, TopicPartition
from orderproc import headers

bootstrap, topic, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unreadable-headers"})
consumer.assign([TopicPartition(topic, 0, 0)])
seen, deadline = 0, time.monotonic() + 60
while seen < total and time.monotonic() < deadline:
    for msg in consumer.consume(500, timeout=1.0):
        if msg.error() is None:
            seen += 1
            names, problem = headers.read(msg)
            print(msg.offset(), problem or ",".join(name for name, _ in names), flush=True)
consumer.close()
"""


def test_a_warm_reader_reports_a_non_utf8_header_name_instead_of_crashing(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    make_producer: Callable[..., Producer],
    tmp_path: Path,
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (scripts/test.sh installs it)"
    topic = topic_factory("headers")
    producer = make_producer()
    for _ in range(300):  # enough reads for the interpreter to specialize the call site
        producer.produce(topic, value=b"v", headers=[("trace", b"1")])
    assert producer.flush(30) == 0
    value = tmp_path / "value"
    value.write_bytes(b"bad")
    bad_name = (b"\xff\xfe=v").decode("utf-8", "surrogateescape")
    subprocess.run([kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-H", "ok=1",
                    "-H", bad_name, str(value)], check=True, timeout=60)  # fmt: skip
    producer.produce(topic, value=b"after", headers=[("trace", b"2")])
    assert producer.flush(30) == 0

    done = subprocess.run([sys.executable, "-c", READER, kafka_bootstrap, topic, "302"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    assert done.returncode == 0, f"reader died with {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    assert lines[300] == f"300 {UNREADABLE}"
    assert lines[301] == "301 trace"  # and the reader goes on
    assert set(lines[:300]) == {f"{i} trace" for i in range(300)}
