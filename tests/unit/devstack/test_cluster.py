"""The dev cluster's pure parts: ports, each node's configuration, the quorum's leader, the
status lines; and naming under-replicated partitions from a metadata answer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from devstack.cluster import ClusterStatus, KafkaCluster, node_ports, replicas_for
from devstack.kafka import KafkaStatus
from devstack.settings import DevstackError, DevstackSettings
from orderproc.cli import app as cli
from orderproc.kafka.replicas import UnderReplicated, under_replicated

pytestmark = pytest.mark.unit


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def _cluster(tmp_path: Path, **kwargs: object) -> KafkaCluster:
    return KafkaCluster(DevstackSettings(devstack_dir=tmp_path), **kwargs)  # type: ignore[arg-type]


def test_nodes_take_every_other_port_from_the_dev_stacks_two() -> None:
    settings = DevstackSettings(kafka_port=9092, kafka_controller_port=9093)

    assert node_ports(settings, 3) == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert replicas_for(3) == (3, 2) and replicas_for(1) == (1, 1) and replicas_for(5) == (3, 2)


@pytest.mark.parametrize(
    ("port", "controller", "nodes", "error"),
    [
        (9092, 9094, 3, "distinct ports"),  # node 2's broker port is node 1's controller port
        (65534, 9093, 2, "up to 65535"),
        (9092, 9093, 6, "--brokers must be 1 to 5"),
        (9092, 9093, 0, "--brokers must be 1 to 5"),
    ],
)
def test_ports_that_collide_or_overflow_are_one_line_errors(
    port: int, controller: int, nodes: int, error: str
) -> None:
    settings = DevstackSettings(kafka_port=port, kafka_controller_port=controller)

    with pytest.raises(DevstackError, match=error) as caught:
        node_ports(settings, nodes)
    assert "\n" not in str(caught.value)


def test_every_node_is_a_voter_and_replicates_internal_topics_three_times(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, nodes=3, ports=[(1001, 1002), (1003, 1004), (1005, 1006)])
    for node in cluster.nodes:
        node.paths.devstack_dir.mkdir(parents=True)
        node._write_config()

    props = [_props(n.paths.properties.read_text()) for n in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@127.0.0.1:1002,2@127.0.0.1:1004,3@127.0.0.1:1006"
    }
    assert props[1]["listeners"] == "PLAINTEXT://127.0.0.1:1003,CONTROLLER://127.0.0.1:1004"
    for p in props:
        for key in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
            assert p[f"{key}.replication.factor"] == "3", key
        assert p["transaction.state.log.min.isr"] == p["min.insync.replicas"] == "2"
        assert p["default.replication.factor"] == "3"
    assert len({n.paths.data for n in cluster.nodes}) == 3  # each its own log dirs


def test_every_node_is_formatted_with_one_cluster_id(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, nodes=3, ports=[(1, 2), (3, 4), (5, 6)])
    for node in cluster.nodes:
        node.paths.devstack_dir.mkdir(parents=True)

    assert len({n._cluster_id() for n in cluster.nodes}) == 1


def test_a_cluster_keeps_the_ports_it_was_made_with(tmp_path: Path) -> None:
    # Before one is made, none is found, and the single broker's ports are not its business.
    odd = DevstackSettings(devstack_dir=tmp_path, kafka_port=9092, kafka_controller_port=9094)
    assert KafkaCluster.made(odd) is None
    made = _cluster(tmp_path, nodes=3, ports=[(1, 2), (3, 4), (5, 6)])
    made.home.mkdir(parents=True)
    made.layout_file.write_text(json.dumps({"nodes": made.ports}))

    assert _cluster(tmp_path).ports == [(1, 2), (3, 4), (5, 6)]  # found again, any settings
    found = KafkaCluster.made(odd)
    assert found is not None and found.bootstrap == "127.0.0.1:1,127.0.0.1:3,127.0.0.1:5"
    assert _cluster(tmp_path, nodes=3).bootstrap == "127.0.0.1:1,127.0.0.1:3,127.0.0.1:5"
    with pytest.raises(DevstackError, match=r"was made with 3 nodes.*remove that folder"):
        _cluster(tmp_path, nodes=5)


def test_the_leader_is_the_newest_view_of_the_running_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = _cluster(tmp_path, nodes=3, ports=[(1, 2), (3, 4), (5, 6)])
    views = {1: (4, 2), 2: None, 3: (5, 3)}  # node 1 saw an older election than node 3
    for node in cluster.nodes:
        state = node.paths.data / "__cluster_metadata-0" / "quorum-state"
        if views[node.node_id]:
            state.parent.mkdir(parents=True)
            epoch, leader = views[node.node_id]  # type: ignore[misc]
            state.write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch}))
        monkeypatch.setattr(node, "running_pid", lambda: 42)

    assert cluster.leader() == 3
    monkeypatch.setattr(cluster.nodes[2], "running_pid", lambda: None)  # node 3 is down
    assert cluster.leader() == 2


def test_status_names_each_node_the_leader_and_what_lacks_replicas() -> None:
    up = KafkaStatus(running=True, ready=True, pid=7, bootstrap="127.0.0.1:9092")
    down = KafkaStatus(running=False, ready=False, pid=None, bootstrap="127.0.0.1:9094")
    lagging = [
        UnderReplicated("orders", 0, (1, 2, 3), (1, 3), 1),
        UnderReplicated("orders", 1, (2, 3, 1), (3, 1), 3),
        UnderReplicated("__consumer_offsets", 7, (2, 1, 3), (1, 3), 1),
    ]

    lines = ClusterStatus([(1, up), (2, down)], leader=1, under_replicated=lagging).describe()

    assert lines[0].startswith("kafka cluster 1/2 nodes running, controller leader node 1, ")
    assert lines[1] == "  node 1: kafka 4.4.0 running pid=7 bootstrap=127.0.0.1:9092"
    assert lines[2] == "  node 2: kafka 4.4.0 stopped bootstrap=127.0.0.1:9094"
    assert lines[3] == (
        "  under-replicated partitions: 3 (__consumer_offsets 1, orders 2); not in sync: node 2"
    )
    quiet = ClusterStatus([(1, up)], leader=None, under_replicated=[]).describe()
    assert "controller leader unknown" in quiet[0] and quiet[-1].endswith("partitions: none")


def _metadata(**topics: dict[int, tuple[int, list[int], list[int]]]) -> SimpleNamespace:
    return SimpleNamespace(
        topics={
            name: SimpleNamespace(
                partitions={
                    pid: SimpleNamespace(leader=leader, replicas=replicas, isrs=isr)
                    for pid, (leader, replicas, isr) in parts.items()
                }
            )
            for name, parts in topics.items()
        }
    )


def test_under_replicated_partitions_are_those_missing_an_in_sync_replica_or_a_leader() -> None:
    metadata = _metadata(
        orders={0: (1, [1, 2, 3], [1, 2, 3]), 1: (2, [2, 3, 1], [2, 1]), 2: (-1, [3], [3])},
        other={0: (1, [1, 2], [1])},
    )

    found = under_replicated(metadata, ["orders", "missing"])

    assert [str(u) for u in found] == [
        "orders[1] in sync [2,1] of [2,3,1]",
        "orders[2] in sync [3] of [3], no leader",
    ]
    assert [u.topic for u in under_replicated(metadata)] == ["orders", "orders", "other"]


def test_node_commands_without_a_cluster_say_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack.settings import get_devstack_settings

    monkeypatch.setenv("ORDERPROC_DEVSTACK_DIR", str(tmp_path))
    get_devstack_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["dev", "kill", "2"])
        refused = CliRunner().invoke(cli, ["dev", "up", "--brokers", "3", "--secure"])
        too_many = CliRunner().invoke(cli, ["dev", "up", "--brokers", "9"])
    finally:
        get_devstack_settings.cache_clear()

    assert "no cluster in this devstack: start one with `orderproc dev up --brokers 3`" in str(
        result.exception
    )
    assert "--secure runs one broker" in str(refused.exception)
    assert too_many.exit_code == 2 and "--brokers" in too_many.output
