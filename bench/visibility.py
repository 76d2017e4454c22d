"""``make bench-visibility``: how soon good orders become visible in the store while others fail.

Issue 8 measured, at 1,000 orders/s with default settings, that blocking mode made 71 of
27,000 good orders visible within 90 s at 10 % failing and none at 36 %. This measures it
again, and queue mode beside it. Each case (mode x share failing) gets fresh topics and a
fresh PostgreSQL schema, ``orderproc consume`` with the default retry settings (3 attempts,
backoff 1 s then 2 s, 10 % jitter): one process on 3 partitions in a consumer group, or
four ``--group-type share`` processes on one partition (queue mode; ``queue-wide``: with
four group members each, ``ORDERPROC_SHARE_MEMBERS=4``); then, once a probe
order is stored (the group hands records out), ``orderproc produce --rate 1000`` for the
window (90 s). At the end of the window it counts the good orders (price at or below the
threshold; every other order fails) committed to ``processed_orders``, then stops both
processes and reads back each good order's latency: the record's produce timestamp (Kafka
CreateTime) to its ``processed_at``, for the orders visible within the window.

A measurement, not a test: it asserts nothing about speed. Prints a table, writes
``bench/results/visibility.json``. Run with the devstack broker and PostgreSQL up
(``make bench-visibility`` starts them); ``--window``, ``--rate`` and ``--cases`` shorten it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

if not __package__:  # run as `python bench/visibility.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.engine import make_url
from tabulate import tabulate

from devstack.postgres import database_url as devstack_database_url
from orderproc.config import GroupType, RetryMode, Settings, get_settings
from orderproc.errors import OrderProcError
from orderproc.kafka.clients import Admin
from orderproc.kafka.topics import ensure_topics
from orderproc.serde import SchemalessSerde
from orderproc.store.engine import open_engine
from orderproc.store.migrate import upgrade

RESULTS = Path(__file__).resolve().parent / "results" / "visibility.json"


@dataclass(frozen=True)
class Mode:
    """How the orders are consumed: a retry mode, or queue mode with ``members`` consumers."""

    name: str
    retry_mode: RetryMode
    group_type: GroupType = GroupType.CONSUMER
    members: int = 1
    partitions: int | None = None  # None: the settings' default (3)
    share_members: int = 1  # queue mode: group members in each process


NON_BLOCKING = Mode("non-blocking", RetryMode.NON_BLOCKING)
BLOCKING = Mode("blocking", RetryMode.BLOCKING)
QUEUE = Mode("queue", RetryMode.NON_BLOCKING, GroupType.SHARE, members=4, partitions=1)
QUEUE_WIDE = dataclasses.replace(QUEUE, name="queue-wide", share_members=4)
CASES: tuple[tuple[Mode, float], ...] = (
    (NON_BLOCKING, 0.0),  # the clean run the consumer-group cases are compared with
    (NON_BLOCKING, 0.10),
    (BLOCKING, 0.10),
    (NON_BLOCKING, 0.36),
    (BLOCKING, 0.36),
    (QUEUE, 0.0),  # the clean run the queue-mode cases are compared with
    (QUEUE, 0.10),
    (QUEUE, 0.36),
    (QUEUE_WIDE, 0.10),
    (QUEUE_WIDE, 0.36),
)


@dataclass(frozen=True)
class CaseResult:
    """One case: what was produced in the window and what the store showed by its end."""

    mode: str
    fail_share: float
    window_s: float
    produced: int
    good_produced: int
    good_visible: int
    p50_s: float | None
    p99_s: float | None
    group_type: str = GroupType.CONSUMER.value  # p99 / clean: against the clean run of its kind


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least the first
    return ordered[int(rank) - 1]


def latencies(produced_ms: dict[str, int], processed: dict[str, float], end: float) -> list[float]:
    """Seconds from produce to processed for each order processed by ``end`` (epoch s)."""
    return [
        at - produced_ms[order_id] / 1000
        for order_id, at in processed.items()
        if order_id in produced_ms and at <= end
    ]


def table(results: Sequence[CaseResult]) -> str:
    """The results as the table ``make bench-visibility`` prints."""
    cleans = {r.group_type: r.p99_s for r in results if r.fail_share == 0 and r.p99_s}
    rows = []
    for r in results:
        share = r.good_visible / r.good_produced if r.good_produced else 0.0
        clean = cleans.get(r.group_type)
        ratio = f"{r.p99_s / clean:.2f}" if clean and r.p99_s is not None else "-"
        rows.append([
            r.mode, f"{r.fail_share:.0%}", f"{r.produced:,}", f"{r.good_produced:,}",
            f"{r.good_visible:,} ({share:.1%})", _seconds(r.p50_s), _seconds(r.p99_s), ratio,
        ])  # fmt: skip
    headers = ["mode", "failing", "produced", "good", f"good visible in {results[0].window_s:g} s",
               "p50", "p99", "p99 / clean"]  # fmt: skip
    return tabulate(rows, headers=headers, disable_numparse=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# -- one case on the real broker and database -----------------------------------------------


class Case:
    """Fresh topics, group and schema for one measurement; removed afterwards."""

    def __init__(self, base: Settings, database_url: str, mode: Mode, share: float) -> None:
        uid = uuid.uuid4().hex[:8]
        self.schema = f"vis_{uid}"
        parsed = make_url(database_url)
        url = parsed.set(query={**parsed.query, "options": f"-csearch_path={self.schema}"})
        self.root_url = database_url
        self.mode = mode
        self.share = share
        self.settings = base.model_copy(
            update={
                "orders_topic": f"vis-{uid}",
                "dlq_topic": f"vis-{uid}-dlq",
                "retry_topic_prefix": f"vis-{uid}.retry",
                "consumer_group": f"vis-{uid}",
                "dlq_group": f"vis-{uid}-dlq",
                "database_url": url.render_as_string(hide_password=False),
                "retry_mode": mode.retry_mode,
                "group_type": mode.group_type,
                "topic_partitions": mode.partitions or base.topic_partitions,
                "share_members": mode.share_members,
            }
        )
        self.logs = Path(tempfile.mkdtemp(prefix=f"orderproc-visibility-{uid}-"))

    def __enter__(self) -> Case:
        with open_engine(self.root_url) as engine, engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        with open_engine(self.settings.effective_database_url) as engine:
            upgrade(engine)
        ensure_topics(self.settings)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:  # the logs are kept only when something went wrong
            shutil.rmtree(self.logs, ignore_errors=True)
        with open_engine(self.root_url) as engine, engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        s = self.settings
        with Admin({"bootstrap.servers": s.bootstrap_servers}) as admin:
            topics = [s.orders_topic, s.dlq_topic, *s.retry_topics]
            for future in admin.delete_topics(topics).values():
                try:
                    future.result(timeout=30)
                except Exception as err:  # a leftover topic is untidy, not a wrong measurement
                    print(f"  (could not delete a topic: {err})", file=sys.stderr)

    def env(self) -> dict[str, str]:
        out = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPROC_")}
        for name, value in self.settings.model_dump().items():
            if value is not None:
                out[f"ORDERPROC_{name.upper()}"] = (
                    value.value if isinstance(value, Enum) else str(value)
                )
        return out

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "orderproc", *args, "--quiet"],
                env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def run(self, rate: float, window_s: float) -> CaseResult:
        consumers = [self.start(f"consumer-{i}", "consume") for i in range(self.mode.members)]
        try:
            probe = self._ready(consumers)
            started = time.time()
            count = str(int(rate * window_s))
            producer = self.start("producer", "produce", "--rate", f"{rate:g}", "--count", count,
                                  "--fail-share", f"{self.share:g}")  # fmt: skip
            time.sleep(max(0.0, started + window_s - time.time()))  # the measured window
            end = time.time()
            visible = self._count_processed() - 1  # the probe is not one of the window's
            _stop(producer, 120)
        finally:
            for consumer in consumers:
                _stop(consumer, 120)
        produced = self._produced()
        produced.pop(probe, None)
        good = {oid: ts for oid, (price, ts) in produced.items()
                if price <= self.settings.price_threshold}  # fmt: skip
        waits = latencies(good, self._processed_at(), end)
        return CaseResult(
            self.mode.name, self.share, window_s, len(produced), len(good), visible,
            percentile(waits, 50), percentile(waits, 99), self.mode.group_type.value,
        )  # fmt: skip

    def _ready(self, consumers: list[subprocess.Popen[bytes]]) -> str:
        """Wait until every consumer has subscribed and one good order (the probe) is stored:
        its group is handing records out. Returns the probe's order id.

        A consumer group logs its assignment; a share group's members get records at their
        second heartbeat (about 5 s after subscribing) and the client says nothing of it,
        hence the probe, for both kinds alike."""
        marker = "assigned " if self.mode.group_type is GroupType.CONSUMER else "consuming "
        for i, consumer in enumerate(consumers):
            self._wait_for_log(f"consumer-{i}", marker, consumer, 120)
        probe = self.start("probe", "produce", "--count", "1", "--fail-share", "0")
        if probe.wait(120) != 0:
            raise OrderProcError(f"the probe order was not produced; see {self.logs}")
        deadline = time.monotonic() + 120
        while not (stored := self._processed_at()):
            if time.monotonic() > deadline:
                raise OrderProcError(f"the probe order was not stored in 120 s; see {self.logs}")
            time.sleep(0.1)
        return next(iter(stored))

    def _wait_for_log(
        self, name: str, marker: str, proc: subprocess.Popen[bytes], t: float
    ) -> None:
        deadline = time.monotonic() + t
        log = self.logs / f"{name}.log"
        while marker not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise OrderProcError(f"{name} did not get ready; see {log}")
            time.sleep(0.1)

    def _count_processed(self) -> int:
        with open_engine(self.settings.effective_database_url) as engine, engine.connect() as c:
            return int(c.scalar(text("SELECT count(*) FROM processed_orders")) or 0)

    def _processed_at(self) -> dict[str, float]:
        with open_engine(self.settings.effective_database_url) as engine, engine.connect() as c:
            rows = c.execute(text("SELECT order_id, processed_at FROM processed_orders"))
            return {oid: _epoch(at) for oid, at in rows}

    def _produced(self) -> dict[str, tuple[float, int]]:
        """Order id -> (price, produce timestamp in ms), read back from the orders topic."""
        topic, serde = self.settings.orders_topic, SchemalessSerde()
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "group.id": f"{topic}-reader",
                "enable.auto.commit": False,
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                    for p in meta.partitions}  # fmt: skip
            consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end])
            out: dict[str, tuple[float, int]] = {}
            left = sum(ends.values())
            deadline = time.monotonic() + 300
            while left and time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=1.0):
                    if msg.error() is None:
                        order = serde.decode(msg.value())
                        out[order.order_id] = (order.price, msg.timestamp()[1])
                        left -= 1
            return out
        finally:
            consumer.close()


def _epoch(at: datetime) -> float:
    return at.timestamp()


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.visibility", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="orders per second")
    parser.add_argument("--window", type=float, default=90.0, help="seconds of producing")
    parser.add_argument("--cases", type=int, default=len(CASES), help="run only the first N")
    parser.add_argument("--mode", action="append", choices=sorted({m.name for m, _ in CASES}),
                        help="run only this mode's cases (repeatable)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = get_settings()
    database_url = base.database_url or devstack_database_url()
    results = []
    load_at_start = os.getloadavg()[0]
    cases = [(mode, share) for mode, share in CASES if not args.mode or mode.name in args.mode]
    try:
        for mode, share in cases[: args.cases]:
            print(f"{mode.name}, {share:.0%} failing: {args.window:g} s at {args.rate:g}/s",
                  flush=True)  # fmt: skip
            with Case(base, database_url, mode, share) as case:
                results.append(case.run(args.rate, args.window))
    except OrderProcError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    report = {
        "results": [asdict(r) for r in results],
        "rate": args.rate,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "definitions": __doc__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
