"""The DLQ monitor: prints every dead-lettered order as the original DLQ consumer did."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from orderproc import headers as h
from orderproc.config import Settings
from orderproc.dlq.watch import Watch
from orderproc.errors import BrokerError
from orderproc.kafka.access import check_settings, monitor_access, stop_if_refused
from orderproc.kafka.clients import monitor_consumer_config
from orderproc.metrics import Health, MonitorMetrics

log = logging.getLogger(__name__)


def describe(msg: Message) -> dict[str, Any]:
    """A DLQ record as a dict: the envelope plus where it sits in the DLQ.

    A value that is not JSON (written by someone else) is shown as text, never fatal.
    """
    raw = msg.value() or b""
    key = msg.key()
    try:
        envelope: Any = json.loads(raw)
    except ValueError:
        envelope = {"unparsed_value": raw.decode("utf-8", "replace")}
    return {
        "dlq": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "headers": _provenance(h.read(msg)[0]),
        "event": envelope,
    }


class DlqMonitor:
    """Tails the DLQ in group ``dlq-group``; commits what it has printed.

    Given ``metrics``, it also exports its lag and, every ``settings.monitor_interval_s``
    in a thread of its own, what waits for the drain and for review
    (``orderproc.dlq.watch``).

    Raises:
        BrokerError: Kafka refuses the credentials, the certificate, or reading the DLQ
            in the monitor's group (checked before its consumer is built).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        json_output: bool = False,
        from_beginning: bool = False,
        echo: Callable[[str], None] = print,
        metrics: MonitorMetrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health or Health()
        self.json_output = json_output
        self.from_beginning = from_beginning
        self._echo = echo
        self._stop = threading.Event()
        self.seen = 0
        check_settings(settings, monitor_access(settings))
        stats = {"stats_cb": metrics.lag.update_from_stats} if metrics else {}
        self.consumer = Consumer(monitor_consumer_config(settings, **stats))

    def stop(self) -> None:
        self._stop.set()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.from_beginning:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
            consumer.assign(partitions)

    def show(self, msg: Message) -> None:
        record = describe(msg)
        if self.json_output:
            self._echo(json.dumps(record, separators=(",", ":")))
            return
        self._echo("--- DLQ EVENT ---")
        self._echo(json.dumps(record["event"], indent=2))

    def run(self, *, max_messages: int | None = None, idle_exit_s: float | None = None) -> int:
        """Print DLQ events until stopped; return how many were printed.

        Raises:
            BrokerError: the broker does not answer, or the DLQ topic does not exist.
        """
        try:
            topics = self.consumer.list_topics(
                self.settings.dlq_topic, timeout=self.settings.admin_timeout_s
            ).topics
        except KafkaException as exc:
            self.consumer.close()
            raise BrokerError(
                f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc.args[0].str()}"
            ) from exc
        info = topics.get(self.settings.dlq_topic)
        if info is None or info.error is not None:
            self.consumer.close()
            raise BrokerError(f"DLQ topic {self.settings.dlq_topic} does not exist")
        self.consumer.subscribe([self.settings.dlq_topic], on_assign=self._on_assign)
        last = time.monotonic()
        watcher = self._start_watch()
        try:
            while not self._stop.is_set() and (max_messages is None or self.seen < max_messages):
                self.health.beat()
                msg = self.consumer.poll(self.settings.poll_timeout_s)
                if msg is None:
                    if idle_exit_s is not None and time.monotonic() - last >= idle_exit_s:
                        break
                    continue
                err = msg.error()
                if err is not None:
                    stop_if_refused(err, self.settings)
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("dlq consumer error: %s", err.str())
                    continue
                last = time.monotonic()
                self.show(msg)
                self.seen += 1
                self.consumer.store_offsets(msg)  # printed: may be committed
        finally:
            self._stop.set()  # ends the watch thread's wait too
            self.consumer.close()
            if watcher is not None:
                watcher.join(timeout=self.settings.admin_timeout_s * 2)
        return self.seen

    def _start_watch(self) -> threading.Thread | None:
        if self.metrics is None:
            return None
        watch = Watch(self.settings, self.metrics, interval_s=self.settings.monitor_interval_s)
        thread = threading.Thread(target=watch.run, args=(self._stop,), name="dlq-watch",
                                  daemon=True)  # fmt: skip
        thread.start()
        return thread


def _provenance(headers: list[h.Header]) -> dict[str, str]:
    """Our provenance headers as text, keyed without the ``orderproc.`` prefix."""
    return {
        name.removeprefix(h.PREFIX): value
        for name, value in h.text_map(headers).items()
        if name.startswith(h.PREFIX)
    }
