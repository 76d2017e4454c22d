"""``make bench``: the consumer's hot path against raw confluent-kafka + fastavro, side by side.

Run ``.venv/bin/python -m bench.run`` (or ``python bench/run.py``) with the devstack
broker and PostgreSQL up. Size and repetitions come from ``ORDERPROC_BENCH_ORDERS``
and ``ORDERPROC_BENCH_REPEATS`` (or ``--orders``/``--repeats``). The table is printed
and ``bench/results/latest.json`` written; the exit status is 0 whatever the ratios,
unless ``--strict`` (then 1 when a ratio is below its target). ``--profile KIND``
runs one consumer kind under cProfile instead and prints its hotspots.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import logging
import os
import platform
import pstats
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import confluent_kafka

from bench import baselines, stats
from bench.stats import Sample
from bench.subjects import NullRepository, check_full_run, run_consumer, run_share_consumer
from bench.workload import BATCH_SIZE, PRICE_THRESHOLD, BenchError, Dataset, Workload
from devstack.postgres import database_url as devstack_database_url
from devstack.registry import SchemaRegistry
from devstack.settings import KAFKA_VERSION
from orderproc.config import GroupType, Settings, WireFormat, get_settings
from orderproc.errors import OrderProcError
from orderproc.kafka.share_groups import configure_share_group
from orderproc.models import Order
from orderproc.serde.registry import RegistryClient
from orderproc.store.engine import make_engine
from orderproc.store.processed import OrderRepository
from orderproc.worker.producer import OrderGenerator, OrderProducer
from orderproc.worker.retry import RetryPolicy

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
DEFAULT_ORDERS = 200_000
DEFAULT_REPEATS = 3
WARMUP_ORDERS = 10_000
FAIL_SHARE = 0.10
IDLE_S = 30.0
SEED = 20240601

DEFINITIONS = {
    "data": (
        "two topics of N Avro orders each (3 partitions, produced once by OrderProducer): "
        "'clean' with no price above the threshold of 100, 'failing' with 10% above it"
    ),
    "timing": (
        "time.perf_counter from the moment the first batch comes back from consume() "
        "(group join, metadata and first fetch excluded on both sides) to the end of the "
        "batch that completes the data topic; closing the consumer is excluded"
    ),
    "throughput": "N data-topic records / timed seconds; each run uses a fresh consumer group",
    "gc": (
        "before each run (baselines and consumers alike) gc.collect() then gc.freeze(), as "
        "orderproc consume does once it is set up: the process's long-lived objects stay out "
        "of the cyclic collector's full collections"
    ),
    "order": (
        "one untimed warm-up round over the first 10,000 records, then rounds that run "
        "every kind once, forwards on even rounds and backwards on odd ones; medians over rounds"
    ),
    stats.RAW_DECODE: (
        "confluent-kafka Consumer (librdkafka defaults: auto offset store, auto commit), "
        "consume(500, timeout=0.05), fastavro.schemaless_reader per record"
    ),
    stats.RAW_COPY: (
        "raw_decode + one psycopg 3 cursor.copy of each batch's rows into processed_orders "
        "and one commit per batch"
    ),
    stats.CONSUMER_NOOP: (
        "orderproc OrderConsumer unchanged (batch 500, poll timeout 0.05 s, non-blocking "
        "retries, max_attempts=2, offsets stored per batch and committed) with a sink that "
        "stores nothing"
    ),
    stats.CONSUMER_NOOP_FAILING: (
        "consumer_noop on the failing topic (retry backoff 0.05 s): the clock stops when every "
        "record is final, i.e. offsets are stored past every main-topic record (good orders "
        "processed) and past every record of the retry topic (failing orders dead-lettered "
        "after their 2nd attempt). Throughput = N main-topic records / that time, so the whole "
        "cost of the failures counts, as it would in a steady stream"
    ),
    stats.CONSUMER_NOOP_FAILING_MAIN: (
        "the same runs timed only until offsets are stored past every main-topic record (all "
        "good orders processed, failing ones acknowledged on the retry topic). librdkafka's "
        "prefetch queues the whole main topic ahead of the retry records, so this leaves out "
        "the retry/DLQ work: shown for information, not used in a ratio"
    ),
    stats.CONSUMER_NOOP_REGISTRY: (
        "consumer_noop on the clean topic's orders produced again, by the same producer, in "
        "the registry wire format (magic byte, schema id, Avro body), reading the writer "
        "schema from the dev stack's registry once and its id from every record"
    ),
    "registry_ratio": (
        "consumer_noop_registry / consumer_noop: the same orders, the registry wire format "
        "against schemaless Avro, same consumer and settings"
    ),
    stats.CONSUMER_PG: (
        "consumer_noop's settings with OrderRepository on PostgreSQL "
        "(COPY into a session temp table, then INSERT .. SELECT .. ON CONFLICT DO NOTHING "
        "RETURNING, one transaction per batch)"
    ),
    stats.RAW_SHARE: (
        "confluent-kafka ShareConsumer (share.acknowledgement.mode=explicit) on the clean topic: "
        "poll(timeout=0.05), fastavro.schemaless_reader and acknowledge(ACCEPT) per record, the "
        "acknowledgements sent with the next poll; the final commit_sync is timed"
    ),
    stats.CONSUMER_SHARE_NOOP: (
        "orderproc ShareOrderConsumer (queue mode, orderproc consume --group-type share) on the "
        "clean topic with the no-op sink, timed like raw_share (its final acknowledgements too)"
    ),
    "share_ratio": (
        "consumer_share_noop / consumer_noop: queue mode against classic mode, same orders, "
        "same sink; no target (the issue asks for the figure)"
    ),
    "share_ceiling_ratio": (
        "consumer_share_noop / raw_share: how close queue mode comes to the share consumer's "
        "own ceiling"
    ),
    stats.RAW_PRODUCE: (
        "N orders generated once before the rounds (10% above the threshold), each encoded "
        "with fastavro.schemaless_writer and produced keyed by orderId to a new topic by a "
        "confluent-kafka Producer with enable.idempotence, acks=all and linger.ms=5 like "
        "orderproc's (librdkafka's defaults otherwise: five requests in flight), a full queue "
        "served by poll(0.1), poll(0) after each record; timed from the first produce to the "
        "end of flush, every delivery report checked; each run's topic then holds N records"
    ),
    stats.PRODUCE: (
        "orderproc OrderProducer.run(rate=0) over the same orders to a new topic: its "
        "serializer, the idempotent producer of orderproc produce (one request in flight: "
        "orderproc.kafka.clients.ONE_REQUEST_IN_FLIGHT), counters and metrics per record, "
        "every delivery report checked, the final flush timed; construction untimed"
    ),
    "produce_ratio": (
        "produce / raw_produce: the same orders, same acknowledgements and idempotence"
    ),
    "failure_isolation_ratio": (
        "consumer_noop_failing / consumer_noop: same consumer and settings, both with the "
        "no-op sink, on two topics of N orders that differ only in the share failing"
    ),
}

SUBJECT_KINDS = (
    stats.CONSUMER_SHARE_NOOP,
    stats.CONSUMER_NOOP,
    stats.CONSUMER_NOOP_REGISTRY,
    stats.CONSUMER_NOOP_FAILING,
    stats.CONSUMER_PG,
    stats.CONSUMER_PG_EOS,
)


class Bench:
    """Runs one kind of measurement over the shared data."""

    def __init__(
        self,
        work: Workload,
        clean: Dataset,
        failing: Dataset,
        registry: Dataset,
        registry_url: str,
        orders: Sequence[Order],
    ) -> None:
        self.work = work
        self.orders = orders
        self.clean = clean
        self.failing = failing
        self.registry = registry
        self.registry_url = registry_url

    def run(self, kind: str, target: int) -> dict[str, Sample]:
        """One run of ``kind`` over the first ``target`` records; checked when it is a full run.

        Returns the run's sample by kind (a failing run also gives its main-topic-only time).
        """
        gc.collect()
        gc.freeze()  # as ``orderproc consume`` does once it is set up
        try:
            return self._run(kind, target)
        finally:
            gc.unfreeze()

    def _run(self, kind: str, target: int) -> dict[str, Sample]:
        dataset = {stats.CONSUMER_NOOP_FAILING: self.failing,
                   stats.CONSUMER_NOOP_REGISTRY: self.registry}.get(kind, self.clean)  # fmt: skip
        if kind in (stats.PRODUCE, stats.RAW_PRODUCE):
            return {kind: self._produce(kind, target)}
        full = target == dataset.orders
        if kind in (stats.RAW_DECODE, stats.RAW_COPY, stats.RAW_SHARE):
            samples = {kind: self._raw(kind, dataset, target)}
        else:
            samples = self._consumer(kind, dataset, target, full)
        if full and samples[kind].count != dataset.orders:
            raise BenchError(f"{kind} handled {samples[kind].count} records, not {dataset.orders}")
        return samples

    def _raw(self, kind: str, dataset: Dataset, target: int) -> Sample:
        work = self.work
        args = (work.bootstrap, dataset.topic, work.group(kind), target, BATCH_SIZE, IDLE_S)
        if kind == stats.RAW_DECODE:
            return baselines.consume_decode(*args)
        if kind == stats.RAW_SHARE:
            settings = work.consumer_settings(dataset, kind).model_copy(
                update={"group_type": GroupType.SHARE}
            )
            longest = RetryPolicy.from_settings(settings).longest_delay()
            configure_share_group(settings, longest)  # earliest, like the subject's
            return baselines.share_consume_decode(
                work.bootstrap, dataset.topic, settings.consumer_group, target, IDLE_S
            )
        work.reset_table()
        with work.pg_connect() as conn:
            sample = baselines.consume_decode_copy(*args, conn)
        if target == dataset.orders and work.count_rows() != dataset.orders:
            raise BenchError(f"COPY baseline stored {work.count_rows()} rows, not {target}")
        return sample

    def _produce(self, kind: str, target: int) -> Sample:
        """``target`` orders into a new topic; each must be in it once when the run ends."""
        work, orders = self.work, self.orders[:target]
        topic = work.topic(kind)
        if kind == stats.RAW_PRODUCE:
            sample = baselines.produce_encode(work.bootstrap, topic, orders)
        else:
            settings = Settings(
                bootstrap_servers=work.bootstrap,
                orders_topic=topic,
                schema_registry_url=None,
                wire_format=WireFormat.SCHEMALESS,  # as raw_produce, whatever the environment
            )
            producer = OrderProducer(settings, echo=None)  # its checks and set-up untimed
            started = time.perf_counter()
            result = producer.run(iter(orders), count=target, rate=0)
            sample = Sample(result.delivered, time.perf_counter() - started)
            if result.delivered != target or result.failed:
                raise BenchError(f"{kind}: {result.delivered} of {target} orders delivered, "
                                 f"{result.failed} failed")  # fmt: skip
        written = work.records_in(topic)
        if written != target:
            raise BenchError(f"{kind} wrote {written} records for {target} orders")
        return sample

    def _consumer(self, kind: str, dataset: Dataset, target: int, full: bool) -> dict[str, Sample]:
        work = self.work
        wire = self.registry_url if kind == stats.CONSUMER_NOOP_REGISTRY else None
        settings = work.consumer_settings(dataset, kind, wire)
        retried = dataset.failing if full else 0
        if kind == stats.CONSUMER_SHARE_NOOP:
            share = settings.model_copy(update={"group_type": GroupType.SHARE})
            return {kind: run_share_consumer(share, NullRepository(), target, IDLE_S).sample}
        if kind in (stats.CONSUMER_PG, stats.CONSUMER_PG_EOS):
            work.reset_table()
            engine = make_engine(work.pg_url)
            try:
                result = run_consumer(
                    settings, OrderRepository(engine), dataset, target, IDLE_S, retried=retried
                )
            finally:
                engine.dispose()
            if full and work.count_rows() != dataset.good:
                raise BenchError(f"consumer stored {work.count_rows()} rows, not {dataset.good}")
        else:
            result = run_consumer(
                settings, NullRepository(), dataset, target, IDLE_S, retried=retried
            )
        if full:
            check_full_run(result.stats, dataset)
        samples = {kind: result.sample}
        if kind == stats.CONSUMER_NOOP_FAILING:
            samples[stats.CONSUMER_NOOP_FAILING_MAIN] = result.main
        return samples


def registry_answering(url: str | None) -> str:
    """``ORDERPROC_SCHEMA_REGISTRY_URL``, else the dev stack's registry, once it answers."""
    url = url or SchemaRegistry().url
    try:
        RegistryClient(url).subjects()
    except OrderProcError as exc:
        raise BenchError(f"{exc}; start it with: .venv/bin/orderproc dev up --registry") from exc
    return url


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise BenchError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise BenchError(f"{name} must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, help="orders per topic (ORDERPROC_BENCH_ORDERS)")
    parser.add_argument("--repeats", type=int, help="rounds (ORDERPROC_BENCH_REPEATS)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a ratio is below target")
    parser.add_argument(
        "--profile", choices=SUBJECT_KINDS, help="profile one consumer run instead of benchmarking"
    )
    return parser.parse_args(argv)


def environment(work: Workload, wall_s: float, load_at_start: float) -> dict[str, Any]:
    with work.pg_connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall_s, 1),
        "python": platform.python_version(),
        "confluent_kafka": package_version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": package_version("fastavro"),
        "psycopg": package_version("psycopg"),
        "sqlalchemy": package_version("sqlalchemy"),
        "postgresql_server": row[0] if row else None,
        "kafka_devstack_version": KAFKA_VERSION,
        "bootstrap": work.bootstrap,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_start": round(load_at_start, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "batch_size": BATCH_SIZE,
        "fail_share": FAIL_SHARE,
    }


def benchmark(work: Workload, bench: Bench, orders: int, repeats: int) -> dict[str, list[Sample]]:
    warmup = min(orders, WARMUP_ORDERS)
    print(f"warm-up: every kind over {warmup:,} records (untimed)", flush=True)
    for kind in stats.KINDS:
        bench.run(kind, warmup)
    samples: dict[str, list[Sample]] = {kind: [] for kind in stats.KINDS}
    for round_index in range(repeats):
        for kind in stats.run_order(round_index):
            for name, sample in bench.run(kind, orders).items():
                samples.setdefault(name, []).append(sample)
                print(
                    f"  round {round_index + 1}/{repeats}  {stats.LABELS[name]:<42}"
                    f"{sample.rate:>10,.0f} msg/s  {sample.seconds:6.2f} s",
                    flush=True,
                )
    return samples


def profile(bench: Bench, kind: str, orders: int) -> None:
    bench.run(kind, min(orders, WARMUP_ORDERS))
    profiler = cProfile.Profile()
    profiler.enable()
    sample = bench.run(kind, orders)[kind]
    profiler.disable()
    print(f"{stats.LABELS[kind]} under cProfile: {sample.rate:,.0f} msg/s over {orders:,} orders")
    out = RESULTS.with_name(f"profile-{kind}.pstats")
    out.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(out)
    report = pstats.Stats(profiler)
    report.sort_stats(pstats.SortKey.TIME).print_stats(30)
    report.sort_stats(pstats.SortKey.CUMULATIVE).print_stats("orderproc|bench", 25)
    print(f"full profile: {out} (python -m pstats {out})")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    try:
        orders = args.orders or env_int("ORDERPROC_BENCH_ORDERS", DEFAULT_ORDERS)
        repeats = args.repeats or env_int("ORDERPROC_BENCH_REPEATS", DEFAULT_REPEATS)
        if orders < 1 or repeats < 1:
            raise BenchError("--orders and --repeats must be at least 1")
        settings = get_settings()
        db_url = settings.database_url or devstack_database_url()
        if not db_url.startswith("postgres"):
            raise BenchError(f"the benchmark needs PostgreSQL, ORDERPROC_DATABASE_URL={db_url!r}")
        with Workload(settings.bootstrap_servers, db_url) as work:
            work.check_broker()
            work.create_schema()
            print(f"producing 3 x {orders:,} orders (bench run {work.run_id})", flush=True)
            clean = work.produce(orders, 0.0, SEED)
            failing = work.produce(orders, FAIL_SHARE, SEED + 1)
            registry_url = registry_answering(settings.schema_registry_url)
            registry = work.produce(orders, 0.0, SEED, registry_url)
            generated = OrderGenerator(PRICE_THRESHOLD, FAIL_SHARE, random.Random(SEED + 2))
            produced = list(itertools.islice(generated, orders))
            bench = Bench(work, clean, failing, registry, registry_url, produced)
            if args.profile:
                profile(bench, args.profile, orders)
                return 0
            samples = benchmark(work, bench, orders, repeats)
            env = environment(work, time.monotonic() - started, load_at_start)
    except OrderProcError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    ratios = stats.compute_ratios(samples)
    report = stats.build_report(
        samples=samples,
        ratios=ratios,
        orders=orders,
        repeats=repeats,
        environment=env,
        definitions=DEFINITIONS,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{orders:,} orders per topic, {repeats} rounds, {env['wall_seconds']:.0f} s in all")
    print(stats.format_table(stats.summarize(samples), ratios))
    print(f"\nwritten {args.output}")
    if args.strict and not all(r.passed for r in ratios):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
