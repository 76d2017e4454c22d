"""``orderproc produce`` and ``orderproc consume``: the long-running workers."""

from __future__ import annotations

import gc
import sys
from enum import StrEnum
from typing import Annotated

import typer

from orderproc.cli.common import (
    echo,
    install_stop_handlers,
    serving_metrics,
    settings_with,
    setup_logging,
)
from orderproc.config import GroupType, RetryMode

app = typer.Typer()


class Guarantee(StrEnum):
    """``--guarantee`` as users spell it."""

    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


JsonLogs = Annotated[
    bool | None,
    typer.Option("--json-logs/--text-logs", help="Log format (default: ORDERPROC_LOG_JSON)."),
]
LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ...")]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="Serve /metrics and /healthz (default: ORDERPROC_METRICS_PORT)."
    ),
]


@app.command()
def produce(
    rate: Annotated[
        float, typer.Option(min=0, help="Orders per second; 0 = as fast as possible.")
    ] = 1.0,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many orders.")] = None,
    fail_share: Annotated[
        float | None,
        typer.Option(
            min=0, max=1, help="Share of prices above the threshold (default: uniform 10-150)."
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Target topic (default: ORDERPROC_ORDERS_TOPIC).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-order lines.")] = False,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed for products and prices (order ids are always new uuid4s)."),
    ] = None,
    metrics_port: MetricsPort = None,
    json_logs: JsonLogs = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Produce random orders, like the original producer (one per second by default)."""
    import random

    from orderproc.metrics import Health, ProducerMetrics, worker_registry
    from orderproc.worker.producer import OrderGenerator, OrderProducer

    settings = settings_with(orders_topic=topic, metrics_port=metrics_port)
    setup_logging(settings, json_logs, log_level)
    health = Health()
    metrics = ProducerMetrics(worker_registry("producer", health))
    producer = OrderProducer(settings, echo=None if quiet else echo, metrics=metrics, health=health)
    install_stop_handlers(producer.stop)
    generator = OrderGenerator(settings.price_threshold, fail_share, random.Random(seed))
    with serving_metrics(settings, metrics.registry, health):
        if count and quiet and sys.stderr.isatty():
            with typer.progressbar(length=count, label="producing", file=sys.stderr) as bar:
                stats = producer.run(generator, count=count, rate=rate, on_progress=bar.update)
        else:
            stats = producer.run(generator, count=count, rate=rate)
    print(
        f"produced={stats.produced} delivered={stats.delivered} failed={stats.failed}",
        file=sys.stderr,
    )
    if stats.failed:
        raise typer.Exit(1)


@app.command()
def consume(
    mode: Annotated[
        RetryMode | None, typer.Option(help="Retry mode (default: non-blocking).")
    ] = None,
    guarantee: Annotated[
        Guarantee | None,
        typer.Option(
            help="at-least-once (default) or exactly-once: retry/DLQ records and offsets commit "
            "in one Kafka transaction per batch."
        ),
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(help="This instance's stable name (transactional id; default: hostname)."),
    ] = None,
    group_type: Annotated[
        GroupType | None,
        typer.Option(
            help="consumer (default): a consumer group; share: a share group (queue mode, "
            "Kafka 4.4): any number of instances per partition, retries by redelivery."
        ),
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1)] = None,
    threshold: Annotated[float | None, typer.Option(help="Orders priced above this fail.")] = None,
    handler: Annotated[
        str | None, typer.Option(help="Custom handler as 'package.module:attribute'.")
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option(min=1, help="Exit after this many records.")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(min=0, help="Exit after this many idle seconds (none pending).")
    ] = None,
    metrics_port: MetricsPort = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-order lines.")] = False,
    json_logs: JsonLogs = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Consume orders: process, retry with backoff, dead-letter, record in the store."""
    from orderproc.kafka.access import check_settings, consumer_access
    from orderproc.metrics import ConsumerMetrics, Health, worker_registry
    from orderproc.store.engine import open_engine
    from orderproc.store.migrate import upgrade
    from orderproc.store.processed import OrderRepository
    from orderproc.worker.consumer import OrderConsumer
    from orderproc.worker.handler import load_handler
    from orderproc.worker.share import ShareOrderConsumer

    settings = settings_with(
        retry_mode=mode,
        processing_guarantee=guarantee.value if guarantee else None,
        instance_id=instance_id,
        group_type=group_type,
        max_attempts=max_attempts,
        price_threshold=threshold,
        metrics_port=metrics_port,
    )
    setup_logging(settings, json_logs, log_level)
    # One clear line (broker down, credentials, certificate, ACLs) before any client thread
    # starts or the database is touched; the consumer creates missing topics itself.
    check_settings(settings, consumer_access(settings))
    with open_engine(settings.effective_database_url) as engine:
        upgrade(engine)
        health = Health()
        metrics = ConsumerMetrics(
            worker_registry("consumer", health),
            group=settings.consumer_group,
            retry_topics=settings.retry_topics,
        )
        kind = ShareOrderConsumer if settings.group_type is GroupType.SHARE else OrderConsumer
        consumer = kind(
            settings,
            OrderRepository(engine),
            handler=load_handler(handler) if handler else None,
            metrics=metrics,
            health=health,
            echo=None if quiet else echo,
        )
        install_stop_handlers(consumer.stop)
        # Everything loaded so far lives as long as the process: keep it out of the
        # cyclic collector's full collections (they would walk every module's objects).
        gc.collect()
        gc.freeze()
        with serving_metrics(settings, metrics.registry, health):
            stats = consumer.run(max_messages=max_messages, idle_exit_s=idle_exit)
    cats = ", ".join(f"{k}={v}" for k, v in sorted(stats.dead_lettered_by_category.items())) or "-"
    print(
        f"consumed={stats.consumed} processed={stats.processed} retried={stats.retried} "
        f"dead_lettered={stats.dead_lettered} ({cats}) duplicates={stats.duplicates} "
        f"avg={stats.average_price:.2f}",
        file=sys.stderr,
    )
