"""What the CLI commands share: settings with overrides, signals, logging."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from orderproc.config import Settings, get_settings
from orderproc.errors import ConfigError
from orderproc.logs import configure_logging

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from orderproc.metrics import Health

log = logging.getLogger("orderproc.cli")


def settings_with(**overrides: Any) -> Settings:
    """Environment settings, with the command's non-None options on top."""
    base = get_settings()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return base
    try:
        return Settings.model_validate({**base.model_dump(), **changes})
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


def setup_logging(settings: Settings, json_logs: bool | None, level: str) -> None:
    configure_logging(
        json_output=settings.log_json if json_logs is None else json_logs, level=level
    )


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM: graceful stop. Second: exit at once. SIGUSR1: every thread's
    stack to stderr, the process running on (``kill -USR1 PID``: where a stuck worker is,
    even inside a library call that keeps Python's own handlers from running)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    calls = {"n": 0}

    def handler(signum: int, _frame: FrameType | None) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            print("\ninterrupted again: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        log.warning(
            "%s received: finishing in-flight work (again to force exit)",
            signal.Signals(signum).name,
        )
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def echo(line: str) -> None:
    print(line, flush=True)


@contextmanager
def serving_metrics(
    settings: Settings, registry: CollectorRegistry, health: Health
) -> Iterator[None]:
    """``/metrics`` and ``/healthz`` on ``settings.metrics_port`` (none when it is 0)."""
    from orderproc.metrics import MetricsServer

    if not settings.metrics_port:
        yield
        return
    server = MetricsServer(registry, health, settings.metrics_host, settings.metrics_port).start()
    try:
        yield
    finally:
        server.stop()
