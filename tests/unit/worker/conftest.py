"""Fake Kafka clients for the worker's unit tests (integration tests use the real broker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


class FakeMessage:
    """What a delivery callback reads of a message (a delivery report has no headers)."""

    def __init__(
        self,
        topic: str,
        partition: int = 0,
        offset: int = 0,
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value = key, value

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeError:
    """A delivery error as confluent-kafka reports it (default: not about the record)."""

    def __init__(self, text: str, code: int = -195) -> None:  # _TRANSPORT
        self.text = text
        self._code = code

    def str(self) -> str:
        return self.text

    def code(self) -> int:
        return self._code


class FakeProducer:
    """Records ``produce`` calls; delivery reports are served by ``poll``/``flush``.

    ``full_for`` makes the next N ``produce`` calls raise ``BufferError`` (a full
    local queue); ``fail_topics`` makes deliveries to those topics fail, with
    ``fail_code`` (default: a transport failure). Polling or flushing from inside a
    delivery report raises, as it must never happen (``nested_polls`` counts the tries).
    """

    def __init__(
        self, *, full_for: int = 0, fail_topics: tuple[str, ...] = (), fail_code: int = -195
    ) -> None:
        self.produced: list[dict[str, Any]] = []
        self.full_for = full_for
        self.fail_topics = fail_topics
        self.fail_code = fail_code
        self.polls: list[float] = []
        self._reports: list[Callable[[], None]] = []
        self.hold_reports = False
        self._serving = False
        self.nested_polls = 0

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.full_for:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, **kwargs})
        callback = kwargs.get("on_delivery")
        if callback is not None:
            failed = topic in self.fail_topics
            err = FakeError("Broker: refused", self.fail_code) if failed else None
            msg = FakeMessage(
                topic, 0, len(self.produced) - 1, kwargs.get("key"), kwargs.get("value")
            )
            self._reports.append(lambda: callback(err, msg))

    def _serve(self) -> None:
        if self._serving:
            self.nested_polls += 1
            raise AssertionError("the producer was polled inside a delivery report")
        if self.hold_reports:
            return
        reports, self._reports = self._reports, []
        self._serving = True
        try:
            for report in reports:
                report()
        finally:
            self._serving = False

    def poll(self, timeout: float = 0) -> int:
        self.polls.append(timeout)
        self._serve()
        return 0

    def flush(self, timeout: float = 0) -> int:
        """Serve reports until none is left (those of records produced meanwhile too)."""
        self._serve()
        while self._reports and not self.hold_reports:
            self._serve()
        return len(self._reports)


class FakeConsumer:
    """Records what the worker asks of its consumer: offsets, seeks, pauses, commits."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, int, int]] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.paused: set[tuple[str, int]] = set()
        self.resumed: list[tuple[str, int]] = []
        self.commits = 0
        self.assigned: list[Any] = []

    def store_offsets(self, *, offsets: list[Any]) -> None:
        self.stored += [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def pause(self, tps: list[Any]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[Any]) -> None:
        for tp in tps:
            self.paused.discard((tp.topic, tp.partition))
            self.resumed.append((tp.topic, tp.partition))

    def commit(self, asynchronous: bool = True) -> None:
        self.commits += 1

    def assignment(self) -> list[Any]:
        return self.assigned


@pytest.fixture
def fake_consumer() -> FakeConsumer:
    return FakeConsumer()


@pytest.fixture
def fake_producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def make_fake_producer() -> Callable[..., FakeProducer]:
    """``FakeProducer(full_for=..., fail_topics=...)``."""
    return FakeProducer
