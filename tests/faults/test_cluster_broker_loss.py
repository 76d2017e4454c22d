"""Scenarios 9 and 10: brokers of a replicated 3-node cluster lost mid-stream, nothing lost.

A cluster of this module's own (``dedicated_cluster``): three combined KRaft nodes, topics
with replication factor 3 and ``min.insync.replicas`` 2, as ``orderproc dev up --brokers 3``
runs them. The producer (``acks=all``, idempotent) writes 500 orders/s; two pipelines read
the same orders topic side by side, one at least once and one exactly once, each with two
consumers, its own retry and DLQ topics, its own store and a drain that runs every few
seconds as Airflow would. No process is ever restarted: every consumer runs from the first
order to the last and exits 0 on SIGTERM, the producer exits 0 by itself.

* ``kill -9`` of the broker leading ``orders[0]``, restarted 15 s later; then of the broker
  coordinating the exactly-once consumer's transactions, restarted 15 s later; then a
  rolling restart of all three (controlled shutdown, start, replicas back in sync).
* two of the three brokers killed for 20 s: the controller quorum and ``min.insync.replicas``
  are both lost, so nothing can be written; the producer's records wait in its queue, the
  consumer says once that it waits for the brokers, and both go on when they are back.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from orderproc.config import ProcessingGuarantee, Settings
from orderproc.dlq.store import DlqStore
from orderproc.kafka.topics import ensure_topics
from orderproc.store.engine import open_engine
from tests.support import migrated_schema

pytestmark = pytest.mark.faults

RATE = 500
RESTART_AFTER_S = 15.0
TWO_DOWN_S = 20.0
IN_SYNC_S = 300.0
DRAIN_EVERY_S = 5.0


def _pipeline(make_settings: Callable[..., Settings], base: Settings, **overrides: Any) -> Settings:
    """Settings of one pipeline on ``base``'s orders topic: its own retry and DLQ topics,
    groups and store."""
    own = make_settings(create=False, bootstrap_servers=base.bootstrap_servers, **overrides)
    return own.model_copy(
        update={"orders_topic": base.orders_topic, "topic_partitions": base.topic_partitions}
    )


@contextmanager
def _draining(procs: Any, pipelines: list[Settings]) -> Iterator[list[str]]:
    """Runs the drain of each pipeline, one run after the other, every few seconds until the
    block ends (as the drain DAG would); yields the runs' one-line outcomes."""
    outcomes: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for settings in pipelines:
                run = procs.start("drain", settings, module="tests.faults.drain_process")
                code = run.wait(600)
                outcomes.append(f"{settings.consumer_group} exit {code}: {run.last_line()}")
            stop.wait(DRAIN_EVERY_S)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield outcomes
    finally:
        stop.set()
        worker.join(900)


def _crash_and_restart(
    cluster: Any, node_id: int, alive: list[Any], in_sync: Callable[[Any, float], None]
) -> None:
    """``kill -9`` one node, keep it down 15 s, start it, wait for every replica."""
    assert cluster.node(node_id).kill() is not None
    time.sleep(RESTART_AFTER_S)  # the fault itself: how long the broker stays away
    assert all(p.running for p in alive), [p.tail() for p in alive if not p.running]
    cluster.start_node(node_id)
    in_sync(cluster, IN_SYNC_S)


def test_a_lost_broker_is_named_by_dev_status_orderproc_status_and_topics_create(
    dedicated_cluster: Any,
    make_settings: Callable[..., Settings],
    settings_env: Callable[[Settings], dict[str, str]],
    replicas_in_sync: Callable[[Any, float], None],
    wait_until: Callable[..., None],
) -> None:
    cluster = dedicated_cluster
    settings = make_settings(create=False, bootstrap_servers=cluster.bootstrap,
                             replication_factor=3, min_insync_replicas=2)  # fmt: skip
    env = {**settings_env(settings), "ORDERPROC_DEVSTACK_DIR": str(cluster.settings.devstack_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orderproc", *args], env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip

    created = cli("topics", "create")
    assert created.returncode == 0, created.stderr
    assert "replication factor 3, min.insync.replicas 2" in created.stderr
    assert cli("dev", "kill", "2").stdout.startswith("node 2 killed pid=")

    def named() -> bool:
        return f"{settings.orders_topic}[" in cli("status", "--window", "0").stdout

    wait_until(named, 120, "orderproc status to name the under-replicated partitions")
    dev = cli("dev", "status").stdout.splitlines()
    env["ORDERPROC_ORDERS_TOPIC"] = f"{settings.orders_topic}-more"  # a topic it cannot make
    refused = cli("topics", "create")
    started = cli("dev", "start", "2")
    assert started.returncode == 0 and started.stdout.startswith("node 2 started pid="), (
        started.stderr
    )
    replicas_in_sync(cluster, IN_SYNC_S)

    assert dev[0].startswith("kafka cluster 2/3 nodes running, controller leader node ")
    assert "  node 2: kafka 4.4.0 stopped" in dev[2]
    lagging = next(line for line in dev if "under-replicated partitions:" in line)
    assert f"{settings.orders_topic} 1," in lagging and lagging.endswith("not in sync: node 2")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "orderproc: error: cannot create topics with replication factor 3: the cluster at "
        f"{cluster.bootstrap} has 2 brokers up (set ORDERPROC_REPLICATION_FACTOR to at most 2, "
        "or start the others)"
    )


def test_leader_and_coordinator_killed_then_a_rolling_restart_lose_no_order(
    scale: int,
    dedicated_cluster: Any,
    make_settings: Callable[..., Settings],
    pg_url: str,
    postgres_server_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    all_settled: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
    leader_of: Callable[[str, str, int], int],
    coordinator_of: Callable[[str, str], int],
    replicas_in_sync: Callable[[Any, float], None],
    records_written: Callable[[str, str], int],
) -> None:
    cluster = dedicated_cluster
    common = {"partitions": 3, "replication_factor": 3, "min_insync_replicas": 2,
              "session_timeout_ms": 10000, "batch_size": 200}  # fmt: skip
    # The exactly-once pipeline's store outlives the drain loop: it is reconciled last.
    with migrated_schema(postgres_server_url, f"t_{uuid.uuid4().hex[:10]}") as eos_db:
        alo = make_settings(create=False, bootstrap_servers=cluster.bootstrap,
                            database_url=pg_url, **common)  # fmt: skip
        eos = _pipeline(make_settings, alo, database_url=eos_db, **common,
                        processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)  # fmt: skip
        for settings in (alo, eos):
            ensure_topics(settings)
        # Produces until stopped after the faults: every fault lands mid-stream.
        producer = procs.produce(alo, 10**9, rate=RATE * scale, fail_share=0.1)
        consumers = {
            name: [procs.consume(s, "--instance-id", f"{name}-{i}") for i in (1, 2)]
            for name, s in (("alo", alo), ("eos", eos))
        }
        alive = [producer, *consumers["alo"], *consumers["eos"]]
        with _draining(procs, [alo, eos]) as drains:
            for settings in (alo, eos):
                wait_until(
                    lambda s=settings: count_processed(s) >= 2000, 300, "2,000 orders stored"
                )

            leader = leader_of(cluster.bootstrap, alo.orders_topic, 0)
            _crash_and_restart(cluster, leader, alive, replicas_in_sync)
            tid = eos.model_copy(update={"instance_id": "eos-1"}).transactional_id
            coordinator = coordinator_of(cluster.bootstrap, tid)
            _crash_and_restart(cluster, coordinator, alive, replicas_in_sync)
            for node in cluster.nodes:  # rolling restart: controlled shutdown, one at a time
                assert node.down() is not None
                cluster.start_node(node.node_id)
                replicas_in_sync(cluster, IN_SYNC_S)
            written = records_written(alo.bootstrap_servers, alo.orders_topic)
            wait_until(lambda: records_written(alo.bootstrap_servers, alo.orders_topic)
                       >= written + 1000, 300, "orders produced after the faults")  # fmt: skip
            ended = [f"{p.name} {p.log.name}:\n{p.tail()}" for p in alive if not p.running]
            assert not ended, "\n".join(
                ["neither producer nor consumers may need a restart:", *ended]
            )

            assert producer.sigterm(600) == 0, producer.tail()
            summary = produced_summary(producer)
            total = summary["produced"]
            assert summary == {"produced": total, "delivered": total, "failed": 0}
            # The idempotent producer wrote each order once, through every leader change
            # (one request in flight: orderproc.kafka.clients.ONE_REQUEST_IN_FLIGHT).
            assert records_written(alo.bootstrap_servers, alo.orders_topic) == total
            for name, settings in (("alo", alo), ("eos", eos)):
                all_settled(settings, 600, consumers[name])
        # the drain loop has ended: one last run each, on a cluster at rest
        for settings in (alo, eos):
            last = procs.start("drain", settings, module="tests.faults.drain_process")
            assert last.wait(600) == 0, last.tail()
        for consumer in alive[1:]:
            assert consumer.running, f"a consumer stopped:\n{consumer.tail()}"
            assert consumer.sigterm() == 0, consumer.tail()

        print(f"leader killed: node {leader}; coordinator killed: node {coordinator}; "
              f"orders written when the rolling restart ended: {written} of {total}")  # fmt: skip
        print("drain runs:", "; ".join(drains[-4:]))
        for label, settings in (("at-least-once", alo), ("exactly-once", eos)):
            result = reconcile(f"cluster-broker-loss-{label}", settings)
            assert len(result.produced) == total  # every acknowledged order is in the topic
            result.check(settings.price_threshold)
            if settings.exactly_once:
                assert result.duplicated == 0
            with open_engine(settings.effective_database_url) as engine:
                events = DlqStore(engine).list_events(limit=1_000_000)
            twice = Counter(e.order_id for e in events) - Counter(result.dead_lettered)
            where = [(e.order_id, e.source_partition, e.source_offset, e.failure_key)
                     for e in events if e.order_id in twice]  # fmt: skip
            assert sorted(e.order_id for e in events) == sorted(result.dead_lettered), where


def test_two_of_three_brokers_down_20s_producer_waits_consumer_pauses_and_resumes(
    scale: int,
    dedicated_cluster: Any,
    make_settings: Callable[..., Settings],
    pg_url: str,
    procs: Any,
    count_processed: Callable[[Settings], int],
    wait_until: Callable[..., None],
    all_settled: Callable[..., None],
    produced_summary: Callable[..., dict[str, int]],
    reconcile: Callable[..., Any],
    leader_of: Callable[[str, str, int], int],
    replicas_in_sync: Callable[[Any, float], None],
    records_written: Callable[[str, str], int],
) -> None:
    cluster = dedicated_cluster
    settings = make_settings(
        create=False,
        bootstrap_servers=cluster.bootstrap,
        partitions=3,
        replication_factor=3,
        min_insync_replicas=2,
        database_url=pg_url,
    )
    ensure_topics(settings)
    total = 30_000 * scale  # a minute of orders around a 20 s outage
    producer = procs.produce(settings, total, rate=RATE * scale, fail_share=0.1)
    consumer = procs.consume(settings)
    wait_until(lambda: count_processed(settings) >= 2000, 300, "2,000 orders stored")

    survivor = leader_of(cluster.bootstrap, settings.orders_topic, 0)
    lost = [n.node_id for n in cluster.nodes if n.node_id != survivor]
    for node_id in lost:
        assert cluster.node(node_id).kill() is not None
    time.sleep(TWO_DOWN_S)  # the fault itself: below min.insync.replicas and the quorum
    assert producer.running and consumer.running
    spawned = [cluster.node(n).start() for n in lost]  # both at once: either restores the quorum
    for node_id, pid in zip(lost, spawned, strict=True):
        cluster.node(node_id).wait_ready(pid)
    replicas_in_sync(cluster, IN_SYNC_S)

    assert producer.wait(900) == 0, producer.tail()
    assert produced_summary(producer) == {"produced": total, "delivered": total, "failed": 0}
    # Each order once in the topic: with five requests in flight, librdkafka once wrote 3
    # orders twice here (orderproc.kafka.clients.ONE_REQUEST_IN_FLIGHT says how and why).
    assert records_written(settings.bootstrap_servers, settings.orders_topic) == total
    all_settled(settings, 600, [consumer])
    assert consumer.running, f"the consumer did not survive the outage:\n{consumer.tail()}"
    assert consumer.sigterm() == 0, consumer.tail()

    lines = consumer.output().splitlines()
    waits = [line for line in lines if "waiting for the brokers:" in line]
    again = [line for line in lines if "the brokers answer again after" in line]
    print("\n".join([*waits, *again]))
    assert len(waits) == len(again) == 1, "\n".join(lines[-30:])  # paused once, said once
    assert lines.index(waits[0]) < lines.index(again[0])
    result = reconcile("cluster-two-of-three-down-20s", settings)
    assert len(result.produced) == total  # nothing acknowledged is lost
    result.check(settings.price_threshold)
