"""Prometheus metrics and the ``/metrics`` + ``/healthz`` endpoint of a worker."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from orderproc.errors import ConfigError

log = logging.getLogger(__name__)


class ConsumerMetrics:
    """The consumer's metrics, in a registry of its own (several consumers may share a process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "orderproc_messages_consumed", "Records read from Kafka", ["topic"], registry=r
        )
        self.processed = Counter(
            "orderproc_orders_processed", "Orders processed and recorded", registry=r
        )
        self.duplicates = Counter(
            "orderproc_orders_duplicate",
            "Redelivered orders already recorded (ignored)",
            registry=r,
        )
        self.retried = Counter(
            "orderproc_orders_retried", "Failed attempts scheduled for retry", ["mode"], registry=r
        )
        self.dead_lettered = Counter(
            "orderproc_orders_dead_lettered", "Orders sent to the DLQ", ["category"], registry=r
        )
        self.batch_seconds = Histogram(
            "orderproc_batch_processing_seconds",
            "Time to process, persist and route one batch",
            registry=r,
        )
        self.record_latency = Histogram(
            "orderproc_record_latency_seconds",
            "From the record's Kafka timestamp to its offset being stored",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.running_average = Gauge(
            "orderproc_running_average_price", "Average price of processed orders", registry=r
        )
        self.lag = Gauge(
            "orderproc_consumer_lag",
            "Consumer lag (librdkafka statistics)",
            ["topic", "partition"],
            registry=r,
        )
        self.flood_open = Gauge(
            "orderproc_flood_breaker_open",
            "1 while the flood breaker holds consumption paused",
            registry=r,
        )
        self.flood_trips = Counter(
            "orderproc_flood_breaker_trips", "Times the flood breaker tripped", registry=r
        )
        self.paused_partitions = Gauge(
            "orderproc_paused_partitions", "Partitions paused (retry delay or breaker)", registry=r
        )

    def update_lag_from_stats(self, stats_json: str) -> None:
        """librdkafka ``stats_cb`` payload -> per-partition consumer lag."""
        try:
            stats: dict[str, Any] = json.loads(stats_json)
        except ValueError:
            return
        for topic, tstats in stats.get("topics", {}).items():
            for part, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if part != "-1" and lag >= 0:
                    self.lag.labels(topic, part).set(lag)


class Health:
    """Liveness of the consume loop: healthy while it has turned recently and is not failed."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self._last_beat = time.monotonic()
        self.failure: str | None = None

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def fail(self, reason: str) -> None:
        self.failure = reason

    def status(self) -> tuple[bool, str]:
        if self.failure:
            return False, self.failure
        age = time.monotonic() - self._last_beat
        if age > self.stale_after_s:
            return False, f"consume loop silent for {age:.0f}s"
        return True, "ok"


class MetricsServer:
    """A small HTTP server: ``/metrics`` (Prometheus text format) and ``/healthz``."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        self._registry = registry
        self._health = health
        handler = self._handler()
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry, health = self._registry, self._health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/healthz"):
                    ok, reason = health.status()
                    doc = {"status": "ok" if ok else "unhealthy", "detail": reason}
                    body, ctype = json.dumps(doc).encode(), "application/json"
                    code = 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics http: " + format, *args)

        return Handler

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
