"""A worker's ``/metrics`` + ``/healthz`` endpoint, its health, and the metrics every worker has.

Every long-running worker (producer, consumer, DLQ monitor) serves its own registry,
built by ``worker_registry``: the process collector (``process_*``: CPU, memory, open
files, start time), ``orderproc_build_info`` naming the worker's role and versions, and
``orderproc_worker_healthy``, computed from ``Health`` at each scrape (a loop that is
stuck, e.g. waiting out a database outage, reads 0 even though nothing updates it).
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

import orderproc
from orderproc.errors import ConfigError

log = logging.getLogger(__name__)

# No ``*_created`` series beside each counter and histogram: Prometheus does not use them,
# and they would double the series every worker exports.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


class Health:
    """Liveness of a worker's loop: healthy while it has turned recently and is not failed."""

    def __init__(
        self, stale_after_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._last_beat = clock()
        self.failure: str | None = None

    def beat(self) -> None:
        self._last_beat = self._clock()

    def fail(self, reason: str) -> None:
        self.failure = reason

    def status(self) -> tuple[bool, str]:
        if self.failure:
            return False, self.failure
        age = self._clock() - self._last_beat
        if age > self.stale_after_s:
            return False, f"loop silent for {age:.0f}s"
        return True, "ok"


def librdkafka_version() -> str:
    from confluent_kafka import libversion

    return str(libversion()[0])


def worker_registry(role: str, health: Health) -> CollectorRegistry:
    """A registry with what every worker exports: process, build info and health."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    build = Gauge(
        "orderproc_build_info",
        "Always 1; the labels name the worker's role and the versions it runs",
        ["role", "version", "python", "librdkafka"],
        registry=registry,
    )
    build.labels(role, orderproc.__version__, platform.python_version(), librdkafka_version()).set(
        1
    )
    healthy = Gauge(
        "orderproc_worker_healthy",
        "1 while the worker's loop turns and has not failed (what /healthz answers)",
        registry=registry,
    )
    healthy.set_function(lambda: 1.0 if health.status()[0] else 0.0)
    return registry


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
