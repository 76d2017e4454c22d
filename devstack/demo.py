"""``orderproc demo``: the whole job end to end on the local broker, with embedded defaults.

The workers run as real processes (as they would under systemd or compose),
their lines prefixed with the service name; the batch steps that Airflow runs
in production are called in-process here so the demo needs no scheduler.
"""

from __future__ import annotations

import os
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
    env: dict[str, str] | None = None
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
            env=self.env,
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


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of the demo's worker processes: this one, with the demo's data folder
    and broker (which may be the dev stack's, not the environment's)."""
    return {
        **os.environ,
        "ORDERPROC_DATA_DIR": str(settings.data_dir),
        "ORDERPROC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
    }


def run_live_stream(settings: Settings, *, orders: int, rate: float, echo: Echo) -> dict[str, str]:
    """Producer, consumer and DLQ monitor on the real broker; returns the consumer's summary."""
    env = worker_env(settings)
    consumer = Service(
        "consumer", ["consume", "--idle-exit", "5", "--log-level", "WARNING"], echo, env
    ).start()
    monitor = Service("dlq", ["dlq", "tail", "--idle-exit", "8"], echo, env).start()
    producer = Service(
        "producer", ["produce", "--count", str(orders), "--rate", str(rate)], echo, env
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


def run_batch_cycle(settings: Settings, *, echo: Echo) -> None:
    """What Airflow runs in production: drain, review (a correction), replay, report."""
    from orderproc.dlq.drain import run_drain
    from orderproc.dlq.filters import EventFilter
    from orderproc.dlq.replay import ReplayRequest, replay_with_settings
    from orderproc.dlq.store import DlqStore
    from orderproc.report import generate_report
    from orderproc.report.render import format_table
    from orderproc.store.engine import open_engine

    drained = run_drain(settings)
    echo(
        f"== drain: {drained.inserted} new DLQ records stored ({drained.duplicates} already there)"
    )

    with open_engine(settings.effective_database_url) as engine:
        store = DlqStore(engine)
        corrected = round(settings.price_threshold * 0.9, 2)
        pending = store.list_events(EventFilter(status="new", categories=("business_rule",)))
        for event in pending:
            store.edit(event.id, {"price": corrected}, actor="demo-reviewer", note="agreed price")
            echo(
                f"== review: {event.order_id} price {event.price:.2f} -> {corrected:.2f}, approved"
            )
        if pending:
            store.approve([e.id for e in pending], actor="demo-reviewer", note="price corrected")

    result = replay_with_settings(settings, ReplayRequest(max_messages=1000), actor="demo")
    echo(f"== replay: {len(result.delivered)} orders republished to {result.topic}")
    consumer = Service(
        "consumer",
        ["consume", "--idle-exit", "4", "--log-level", "WARNING"],
        echo,
        worker_env(settings),
    ).start()
    if consumer.wait(180) != 0:
        raise RuntimeError("the consumer failed; see its lines above")

    report, files = generate_report(settings.effective_database_url, settings.effective_reports_dir)
    echo(format_table(report))
    echo(f"== report: {files.markdown} (also {files.csv.name}, {files.chart.name})")
