"""``orderproc demo``: the whole job end to end on the local broker, with embedded defaults.

The workers run as real processes (as they would under systemd or compose),
their lines prefixed with the service name; the batch steps that Airflow runs
in production are called in-process here so the demo needs no scheduler.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from orderproc.config import Settings

Echo = Callable[[str], None]


@dataclass
class Service:
    """A worker process whose output is relayed line by line with a prefix."""

    name: str
    args: list[str]
    echo: Echo
    lines: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _relay: threading.Thread | None = None

    def start(self) -> Service:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "orderproc", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._relay = threading.Thread(target=self._pump, daemon=True)
        self._relay.start()
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self.echo(f"[{self.name:<8}] {line}")

    def wait(self, timeout_s: float) -> int:
        assert self._proc is not None and self._relay is not None
        try:
            code = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.terminate()  # graceful: the worker commits and exits
            code = self._proc.wait(30)
        self._relay.join(5)
        return code


def run_live_stream(settings: Settings, *, orders: int, rate: float, echo: Echo) -> dict[str, str]:
    """Producer, consumer and DLQ monitor on the real broker; returns the consumer's summary."""
    consumer = Service(
        "consumer", ["consume", "--idle-exit", "5", "--log-level", "WARNING"], echo
    ).start()
    monitor = Service("dlq", ["dlq", "tail", "--idle-exit", "8"], echo).start()
    producer = Service(
        "producer", ["produce", "--count", str(orders), "--rate", str(rate)], echo
    ).start()
    budget = orders / rate + 120 if rate else 180
    if producer.wait(budget) != 0:
        raise RuntimeError("the producer failed; see its lines above")
    consumer_code = consumer.wait(budget)
    monitor.wait(60)
    if consumer_code != 0:
        raise RuntimeError("the consumer failed; see its lines above")
    return _summary(consumer.lines)


def _summary(lines: list[str]) -> dict[str, str]:
    for line in reversed(lines):
        if line.startswith("consumed="):
            return dict(part.split("=", 1) for part in line.split() if "=" in part)
    return {}
