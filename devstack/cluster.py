"""A local replicated Kafka cluster: N combined broker+controller KRaft nodes on loopback.

``orderproc dev up --brokers 3`` runs it. Each node is the dev stack's broker
(``KafkaBroker``) with a node id, ports and a folder of its own; all share one
cluster id and one static quorum (every node a voter, formatted without
``--standalone``). Internal topics (offsets, transactions, share state) and topics
created without a replication factor get ``min(3, N)`` replicas and
``min.insync.replicas`` ``min(2, N)``: with three nodes one may be lost without
stopping writes. Layout under ``<devstack_dir>/kafka-cluster``::

    cluster.json        the nodes' ids and ports, fixed when the cluster is first made
    cluster-id          the id every node was formatted with
    node-<id>/          that node's kafka-server.properties, kafka-data/, kafka-logs/, kafka.pid

Node ``i`` (from 0) listens on ``ORDERPROC_KAFKA_PORT + 2i`` and its controller on
``ORDERPROC_KAFKA_CONTROLLER_PORT + 2i`` (9092/9093, 9094/9095, 9096/9097 by default),
so the cluster and the single broker share ports: one of them runs at a time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from devstack.kafka import KafkaBroker, KafkaStatus, _admin
from devstack.kafka_config import HOST, new_cluster_id
from devstack.maven import fetch_kafka_jars, kafka_home
from devstack.settings import DevstackError, DevstackSettings, get_devstack_settings
from orderproc.kafka.replicas import UnderReplicated, under_replicated

CLUSTER_FOLDER = "kafka-cluster"
LAYOUT = "cluster.json"
MAX_NODES = 5
"""Every node is a voter; five voters ride out two losses, more only slow the quorum."""


def replicas_for(nodes: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) a cluster of ``nodes`` gives its topics."""
    return min(3, nodes), min(2, nodes)


def node_ports(settings: DevstackSettings, nodes: int) -> list[tuple[int, int]]:
    """(broker port, controller port) of each node, derived from the dev stack's two ports.

    Raises:
        DevstackError: ``nodes`` out of range, or two of the ports coincide or leave 1-65535.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise DevstackError(f"--brokers must be 1 to {MAX_NODES}, got {nodes}")
    ports = [
        (settings.kafka_port + 2 * i, settings.kafka_controller_port + 2 * i) for i in range(nodes)
    ]
    flat = [p for pair in ports for p in pair]
    if len(set(flat)) != len(flat) or max(flat) > 65535:
        raise DevstackError(
            f"a cluster of {nodes} needs ORDERPROC_KAFKA_PORT + 0, 2, 4... and "
            "ORDERPROC_KAFKA_CONTROLLER_PORT + 0, 2, 4... to be distinct ports up to 65535 "
            f"(they are {settings.kafka_port} and {settings.kafka_controller_port})"
        )
    return ports


class ClusterNode(KafkaBroker):
    """One node of the dev cluster: the dev stack's broker with a node id and shared voters."""

    # Three JVMs on a laptop: the quick compiler only. A node restarted in a drill answers
    # sooner and leaves more of the cores to the workers (the single broker, which `make
    # bench` measures against, keeps the optimizing compiler).
    jvm_options = ("-XX:TieredStopAtLevel=1",)

    def __init__(
        self,
        settings: DevstackSettings,
        *,
        node_id: int,
        ports: tuple[int, int],
        voters: str,
        replicas: tuple[int, int],
        libs_dir: Path,
    ) -> None:
        self.folder = f"{CLUSTER_FOLDER}/node-{node_id}"
        super().__init__(settings, libs_dir=libs_dir, ports=ports)
        self.node_id = node_id
        self._voters = voters
        self._replicas = replicas

    def _server_overrides(self) -> dict[str, str]:
        factor, isr = (str(n) for n in self._replicas)
        return {
            "node.id": str(self.node_id),
            "controller.quorum.voters": self._voters,
            "offsets.topic.replication.factor": factor,
            "transaction.state.log.replication.factor": factor,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": factor,
            "share.coordinator.state.topic.min.isr": isr,
            "default.replication.factor": factor,
            "min.insync.replicas": isr,
            # 10 partitions each, not 50: every restart of a node re-elects and re-syncs
            # them all, and a laptop cluster needs no more group or transaction coordinators.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "10",
        }

    def _cluster_id(self) -> str:
        # One id for every node: the cluster's file, one folder up.
        path = self.paths.devstack_dir.parent / "cluster-id"
        if not path.is_file():
            path.write_text(new_cluster_id() + "\n")
        return path.read_text().strip()

    def quorum_view(self) -> tuple[int, int] | None:
        """(leader epoch, leader id) as this node last wrote it (KRaft's quorum-state file)."""
        state = self.paths.data / "__cluster_metadata-0" / "quorum-state"
        try:
            doc = json.loads(state.read_text())
            return int(doc["leaderEpoch"]), int(doc["leaderId"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class ClusterStatus:
    """What ``orderproc dev status`` says about the cluster."""

    nodes: list[tuple[int, KafkaStatus]]
    leader: int | None
    under_replicated: list[UnderReplicated] | None
    """None when no node answered (nothing could be asked)."""

    def describe(self) -> list[str]:
        running = sum(1 for _, s in self.nodes if s.running)
        leader = "unknown" if self.leader is None else f"node {self.leader}"
        lines = [
            f"kafka cluster {running}/{len(self.nodes)} nodes running, controller leader "
            f"{leader}, bootstrap={','.join(s.bootstrap for _, s in self.nodes)}"
        ]
        lines += [f"  node {node_id}: {s.describe()}" for node_id, s in self.nodes]
        lines.append(f"  under-replicated partitions: {self._lagging()}")
        return lines

    def _lagging(self) -> str:
        if self.under_replicated is None:
            return "unknown (no node answers)"
        if not self.under_replicated:
            return "none"
        per_topic = Counter(u.topic for u in self.under_replicated)
        out_of_sync = sorted({r for u in self.under_replicated for r in u.replicas} - {
            r for u in self.under_replicated for r in u.isr})  # fmt: skip
        topics = ", ".join(f"{t} {n}" for t, n in sorted(per_topic.items()))
        nodes = f"; not in sync: node {', '.join(map(str, out_of_sync))}" if out_of_sync else ""
        return f"{len(self.under_replicated)} ({topics}){nodes}"


class KafkaCluster:
    """Start, stop, kill and inspect the dev stack's cluster.

    Args:
        settings: Defaults to ``get_devstack_settings()``.
        nodes: How many nodes it has (default: those of the cluster made in this dev stack
            folder, else 3). A different number than the existing cluster's is an error.
        ports: (broker, controller) port per node; default derived from the settings
            (``node_ports``). Tests pass free ports.
        libs_dir: Where the jars live (see ``KafkaBroker``); default: where the cluster was
            made with, else ``<devstack_dir>/kafka-<version>/libs``.
    """

    def __init__(
        self,
        settings: DevstackSettings | None = None,
        *,
        nodes: int | None = None,
        ports: list[tuple[int, int]] | None = None,
        libs_dir: Path | None = None,
    ) -> None:
        self.settings = settings or get_devstack_settings()
        self.home = self.settings.devstack_dir / CLUSTER_FOLDER
        stored, stored_libs = self._stored_layout()
        self.libs = libs_dir or stored_libs or kafka_home(self.settings.devstack_dir) / "libs"
        if nodes is None or (stored and nodes == len(stored)):
            ports = ports or stored
        self.ports = ports or node_ports(self.settings, nodes or 3)
        if stored and stored != self.ports:
            raise DevstackError(
                f"the cluster in {self.home} was made with {len(stored)} nodes on ports "
                f"{_ports_text(stored)}; remove that folder to make one of {len(self.ports)} "
                f"on {_ports_text(self.ports)}"
            )
        voters = ",".join(f"{i}@{HOST}:{c}" for i, (_, c) in enumerate(self.ports, 1))
        replicas = replicas_for(len(self.ports))
        self.nodes = [
            ClusterNode(self.settings, node_id=i, ports=p, voters=voters, replicas=replicas,
                        libs_dir=self.libs)
            for i, p in enumerate(self.ports, 1)
        ]  # fmt: skip

    @classmethod
    def made(cls, settings: DevstackSettings | None = None) -> KafkaCluster | None:
        """The cluster made in the dev stack folder, or None (no ports are checked then)."""
        settings = settings or get_devstack_settings()
        if not (settings.devstack_dir / CLUSTER_FOLDER / LAYOUT).is_file():
            return None
        return cls(settings)

    @property
    def layout_file(self) -> Path:
        return self.home / LAYOUT

    @property
    def bootstrap(self) -> str:
        """Every node's listener, comma-separated (clients need only one to answer)."""
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def replicas(self) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) its topics should have."""
        return replicas_for(len(self.nodes))

    def node(self, node_id: int) -> ClusterNode:
        """The node with this id (from 1).

        Raises:
            DevstackError: no such node.
        """
        if not 1 <= node_id <= len(self.nodes):
            raise DevstackError(f"no node {node_id}: the cluster has nodes 1 to {len(self.nodes)}")
        return self.nodes[node_id - 1]

    def running_pids(self) -> list[int]:
        return [pid for n in self.nodes if (pid := n.running_pid()) is not None]

    def up(self, progress: Callable[[str], None] | None = None) -> list[int]:
        """Start every node that is not running, then wait until all answer and know each
        other; returns the ids of the nodes started here (empty: all were running)."""
        fetch_kafka_jars(self.libs, progress=progress)
        self.home.mkdir(parents=True, exist_ok=True)
        layout = {"nodes": self.ports, "libs": str(self.libs)}
        self.layout_file.write_text(json.dumps(layout) + "\n")
        spawned = {n.node_id: n.start(progress) for n in self.nodes}
        # A node answers only once a majority of voters runs: start all, then wait.
        for node in self.nodes:
            node.wait_ready(spawned[node.node_id])
        self.wait_all_registered()
        return [node_id for node_id, pid in spawned.items() if pid is not None]

    def start_node(self, node_id: int) -> bool:
        """Start one node and wait until it answers; False when it was already running."""
        node = self.node(node_id)
        spawned = node.start()
        node.wait_ready(spawned)
        return spawned is not None

    def down(self) -> list[int]:
        """Stop every node (controlled shutdown, last node first); returns the pids stopped."""
        return [pid for n in reversed(self.nodes) if (pid := n.down()) is not None]

    def wait_all_registered(self, timeout_s: float | None = None) -> None:
        """Wait until the metadata of a live node lists every running node as a broker."""
        timeout_s = timeout_s or self.settings.kafka_start_timeout_s
        deadline = time.monotonic() + timeout_s
        want = {n.node_id for n in self.nodes if n.running_pid() is not None}
        while True:
            seen = self._brokers_seen()
            if want <= seen:
                return
            if time.monotonic() > deadline:
                missing = ", ".join(str(i) for i in sorted(want - seen))
                raise DevstackError(f"kafka nodes {missing} did not join the cluster in time")
            time.sleep(0.5)

    def status(self) -> ClusterStatus:
        """Each node, the quorum's leader and the under-replicated partitions."""

        nodes = [(n.node_id, n.status()) for n in self.nodes]
        metadata = self._metadata()
        lagging = None if metadata is None else under_replicated(metadata)
        return ClusterStatus(nodes, self.leader(), lagging)

    def leader(self) -> int | None:
        """The controller quorum's leader, as the running nodes last recorded it."""
        views = [v for n in self.nodes if n.running_pid() is not None and (v := n.quorum_view())]
        if not views:
            return None
        _, leader = max(views)
        return leader if leader > 0 else None

    def _metadata(self) -> Any:
        live = [n.bootstrap for n in self.nodes if n.running_pid() is not None]
        if not live:
            return None
        with _admin(",".join(live)) as admin:
            try:
                return admin.list_topics(timeout=5.0)
            except KafkaException:
                return None

    def _brokers_seen(self) -> set[int]:
        metadata = self._metadata()
        return set() if metadata is None else set(metadata.brokers)

    def _stored_layout(self) -> tuple[list[tuple[int, int]] | None, Path | None]:
        try:
            doc = json.loads(self.layout_file.read_text())
            ports = [(int(b), int(c)) for b, c in doc["nodes"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        return ports, Path(doc["libs"]) if isinstance(doc.get("libs"), str) else None


def _ports_text(ports: list[tuple[int, int]]) -> str:
    return ", ".join(f"{b}/{c}" for b, c in ports)
