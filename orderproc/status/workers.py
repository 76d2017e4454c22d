"""Running workers as ``orderproc status --metrics URL`` sees them: ``/healthz`` and a few
of their ``/metrics`` (role, flood breaker, paused partitions, lag)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from orderproc.errors import ConfigError
from orderproc.status.model import Finding, Status, Worker


def base_url(url: str) -> str:
    """``http://host:port`` from what a user typed (``host:port`` too; a path is dropped).

    Raises:
        ConfigError: not an http(s) URL with a host and a valid port.
    """
    text = url.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(f"--metrics {url!r}: expected a worker's URL, e.g. http://host:9108")
    return f"{parts.scheme}://{parts.netloc}"


def look_at_workers(urls: list[str], status: Status, *, timeout_s: float) -> None:
    for url in urls:
        worker = look_at(url, timeout_s)
        status.workers.append(worker)
        name = f"{worker.role or 'worker'} at {url}"
        if not worker.reachable:
            status.findings.append(Finding(name, f"not reachable ({worker.detail})"))
        elif worker.healthy is False:
            status.findings.append(Finding(name, f"unhealthy: {worker.detail}"))
        if worker.flood_breaker_open:
            status.findings.append(Finding(name, "flood breaker open: consumption paused"))


def look_at(url: str, timeout_s: float) -> Worker:
    """One worker's health and metrics; an unreachable one is a ``Worker`` saying so."""
    try:
        health_code, health = _get(f"{url}/healthz", timeout_s)
        _, text = _get(f"{url}/metrics", timeout_s)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Worker(url, reachable=False, detail=str(reason))
    worker = Worker(url, reachable=True, healthy=health_code == 200)
    try:
        worker.detail = str(json.loads(health).get("detail"))
    except (ValueError, AttributeError):
        worker.detail = health[:200]
    _read_metrics(text, worker)
    return worker


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return int(answer.status), answer.read(1_000_000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # 503 from /healthz is an answer
        return exc.code, exc.read(10_000).decode("utf-8", "replace")


def _read_metrics(text: str, worker: Worker) -> None:
    lag = 0.0
    seen_lag = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "orderproc_build_info":
                worker.role = sample.labels.get("role")
            elif sample.name == "orderproc_flood_breaker_open":
                worker.flood_breaker_open = sample.value >= 1
            elif sample.name == "orderproc_paused_partitions":
                worker.paused_partitions = int(sample.value)
            elif sample.name == "orderproc_consumer_lag_messages":
                lag += sample.value
                seen_lag = True
    worker.lag = int(lag) if seen_lag else None
