"""Logging setup: human-readable lines by default, one JSON object per line on request."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(*, json_output: bool = False, level: str | int = "INFO") -> None:
    """Configure the root logger once for a worker process."""
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # librdkafka's own lines are routed through `logger=` at WARNING; keep our INFO lines readable.
    logging.getLogger("alembic").setLevel(logging.WARNING)


class LibrdkafkaLog:
    """librdkafka's own log lines, through Python logging, without the flood.

    Given to every client as its ``logger`` setting. librdkafka logs each failed
    connection attempt: a broker that is down for a minute makes hundreds of
    identical lines. The first line of a kind is logged at its own level (at most
    WARNING: the client retries by itself); repeats within ``quiet_s`` go to DEBUG.
    confluent-kafka calls ``log(level, fmt, facility, client name, message)``.
    """

    def __init__(self, name: str = "orderproc.librdkafka", quiet_s: float = 60.0) -> None:
        self._log = logging.getLogger(name)
        self._quiet_s = quiet_s
        self._last: dict[str, float] = {}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility = str(args[0]) if args else ""
        text = str(args[-1]) if args else fmt
        self._emit(f"{facility}:{text.split(':', 1)[0]}", level, facility, text)

    def error(self, err: Any) -> None:
        """An ``error_cb``: a client error (a broker down, all brokers down), quietened
        the same way. The job decides what an error means: this only reports it (the
        Kafka provider's default callback prints every one of them)."""
        self._emit(f"error:{err.code()}", logging.WARNING, "error", str(err.str()))

    def _emit(self, kind: str, level: int, facility: str, text: str) -> None:
        now = time.monotonic()
        seen = self._last.get(kind)
        self._last[kind] = now
        if seen is not None and now - seen < self._quiet_s:
            level = logging.DEBUG
        self._log.log(min(level, logging.WARNING), "librdkafka %s: %s", facility, text)


LIBRDKAFKA_LOG = LibrdkafkaLog()
"""The one adapter every client's ``logger`` setting points at."""
