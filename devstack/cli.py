"""``orderproc dev`` and ``orderproc demo``: the local Kafka broker (plain or secured), schema
registry and PostgreSQL (no Docker), and the whole job end to end on them.

Not part of the shipped package: ``orderproc.cli`` adds these commands when this
checkout's ``devstack`` is importable (``make install``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from devstack.cluster import KafkaCluster
    from devstack.kafka import KafkaBroker
    from devstack.kafka_secure import SecureKafkaBroker
    from devstack.registry import SchemaRegistry

app = typer.Typer(no_args_is_help=True)

PostgresFlag = Annotated[
    bool, typer.Option("--postgres", help="Also PostgreSQL (Debian packages; needs root).")
]
RegistryFlag = Annotated[
    bool,
    typer.Option(
        "--registry",
        help="Also a schema registry (Apicurio, ids kept across restarts); registers the order "
        "schema and prints ORDERPROC_SCHEMA_REGISTRY_URL.",
    ),
]
BrokersOption = Annotated[
    int,
    typer.Option(
        "--brokers",
        min=1,
        max=5,
        help="Nodes of a replicated KRaft cluster (3: replication factor 3, min.insync.replicas "
        "2); prints the client settings. 1: the single broker.",
    ),
]
NodeArgument = Annotated[int, typer.Argument(help="The cluster node's id (1, 2, 3...).")]
SecureFlag = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="SASL_SSL (SCRAM-SHA-512) with a throwaway CA and ACLs; prints the client settings.",
    ),
]


def _brokers() -> tuple[KafkaBroker, SecureKafkaBroker]:
    """The devstack's plain and secured brokers (they share the ports: one runs at a time)."""
    # Imported per command so `orderproc --help` does not load librdkafka or psycopg.
    from devstack.kafka import KafkaBroker
    from devstack.kafka_secure import SecureKafkaBroker

    return KafkaBroker(), SecureKafkaBroker()


def _cluster() -> KafkaCluster | None:
    """The cluster made in this devstack, if any."""
    from devstack.cluster import KafkaCluster

    return KafkaCluster.made()


def _new_cluster(nodes: int) -> KafkaCluster:
    from devstack.cluster import KafkaCluster

    return KafkaCluster(nodes=nodes)


def _refuse_if_running(*others: KafkaBroker | KafkaCluster | None) -> None:
    from devstack.cluster import KafkaCluster
    from devstack.settings import DevstackError

    for other in others:
        if other is None:
            continue
        if isinstance(other, KafkaCluster):
            if pids := other.running_pids():
                raise DevstackError(
                    f"the cluster of this devstack runs on {other.bootstrap} (pids "
                    f"{', '.join(map(str, pids))}); stop it first with `orderproc dev down`"
                )
        elif (pid := other.running_pid()) is not None:
            kind = "secured" if other.security != "PLAINTEXT" else "plain"
            raise DevstackError(
                f"the {kind} broker of this devstack runs on {other.bootstrap} (pid {pid}); "
                "stop it first with `orderproc dev down`"
            )


def _registry() -> SchemaRegistry:
    from devstack.registry import SchemaRegistry

    return SchemaRegistry()


@app.command()
def up(
    postgres: PostgresFlag = False,
    secure: SecureFlag = False,
    registry: RegistryFlag = False,
    brokers: BrokersOption = 1,
) -> None:
    """Start the local Kafka broker, or a cluster with --brokers 3 (and PostgreSQL with
    --postgres, a schema registry with --registry).

    The `export ORDERPROC_...` lines it prints (stdout, the rest goes to stderr) point a
    client at what it started: `eval "$(orderproc dev up --brokers 3)"`. They are printed
    when a client needs them: a broker on another port than 9092, a cluster, --secure (as
    the `orderproc` user), --registry.
    """
    from devstack.settings import DevstackError

    plain, secured = _brokers()
    if brokers > 1:
        if secure:
            raise DevstackError("--secure runs one broker: leave out --brokers, or --secure")
        _refuse_if_running(plain, secured)
        _start_cluster(_new_cluster(brokers))
    elif secure:
        _refuse_if_running(plain, _cluster())
        _start_secured(secured)
    else:
        _refuse_if_running(secured, _cluster())
        _start_plain(plain, quiet=registry)
    if registry:
        _start_registry(_registry())
    if postgres:
        from devstack.postgres import postgres_up

        typer.echo(f"postgres running url={postgres_up()}")


def _start(broker: KafkaBroker) -> str:
    result = broker.up(progress=lambda note: typer.echo(f"kafka: {note}", err=True))
    status = result.status
    verb = "started" if result.started else "already running"
    return f"kafka {status.version} {verb} pid={status.pid} bootstrap={status.bootstrap}"


def _start_plain(broker: KafkaBroker, *, quiet: bool) -> None:
    from devstack.kafka_security import export_lines
    from orderproc.config import Settings

    line = _start(broker)
    moved = broker.bootstrap != Settings.model_fields["bootstrap_servers"].default
    # Status on stderr when stdout carries settings, so the output can be eval'd as it is.
    typer.echo(line, err=quiet or moved)
    if moved:
        for export in export_lines({"ORDERPROC_BOOTSTRAP_SERVERS": broker.bootstrap}):
            typer.echo(export)


def _start_cluster(cluster: KafkaCluster) -> None:
    from devstack.kafka_security import export_lines
    from devstack.settings import KAFKA_VERSION

    started = cluster.up(progress=lambda note: typer.echo(f"kafka: {note}", err=True))
    verb = f"started nodes {', '.join(map(str, started))}" if started else "already running"
    factor, isr = cluster.replicas
    typer.echo(f"kafka {KAFKA_VERSION} cluster of {len(cluster.nodes)} {verb} "
               f"bootstrap={cluster.bootstrap}", err=True)  # fmt: skip
    env = {
        "ORDERPROC_BOOTSTRAP_SERVERS": cluster.bootstrap,
        "ORDERPROC_REPLICATION_FACTOR": str(factor),
        "ORDERPROC_MIN_INSYNC_REPLICAS": str(isr),
    }
    for line in export_lines(env):
        typer.echo(line)


def _start_secured(broker: SecureKafkaBroker) -> None:
    from devstack.kafka_security import export_lines

    # Status on stderr, settings on stdout: the output can be eval'd as it is.
    typer.echo(f"{_start(broker)} security={broker.security}", err=True)
    typer.echo(f"# as user orderproc; the admin's password stays in {broker.credentials_file}")
    for line in export_lines(broker.client_env()):
        typer.echo(line)


def _start_registry(registry: SchemaRegistry) -> None:
    from orderproc.cli.common import settings_with
    from orderproc.serde import RegistrySerde, local_schema
    from orderproc.serde.registry import RegistryClient
    from orderproc.serde.subjects import register

    started = registry.up(progress=lambda note: typer.echo(f"registry: {note}", err=True))
    status = registry.status()
    typer.echo(f"{status.describe()}{'' if started else ' (already running)'}", err=True)
    settings = settings_with(schema_registry_url=registry.url)
    serde = RegistrySerde(RegistryClient(registry.url), topic=settings.orders_topic,
                          strategy=settings.subject_strategy)  # fmt: skip
    found = register(serde.client, serde.subject(), local_schema())
    typer.echo(f"registry: {serde.subject()} version {found.version} is id {found.schema_id}",
               err=True)  # fmt: skip
    typer.echo(f"export ORDERPROC_SCHEMA_REGISTRY_URL={registry.url}")


@app.command()
def down(postgres: PostgresFlag = False) -> None:
    """Stop the local Kafka broker, plain or secured, or the cluster, the schema registry
    (and PostgreSQL with --postgres)."""
    stopped = False
    for broker in _brokers():
        pid = broker.down()
        if pid is not None:
            stopped = True
            secured = "" if broker.security == "PLAINTEXT" else f" security={broker.security}"
            typer.echo(f"kafka stopped pid={pid}{secured}")
    cluster = _cluster()
    if cluster is not None and (pids := cluster.down()):
        stopped = True
        typer.echo(f"kafka cluster stopped pids={','.join(map(str, pids))}")
    if not stopped:
        typer.echo("kafka was not running")
    registry = _registry()
    pid = registry.down()
    if pid is not None:
        typer.echo(f"registry stopped pid={pid}")
    if postgres:
        from devstack.postgres import postgres_down

        typer.echo("postgres stopped" if postgres_down() else "postgres was not running")


@app.command()
def status() -> None:
    """Show whether the local broker (plain, and secured once used), the cluster (once made:
    each node, the controller quorum's leader, under-replicated partitions), the schema
    registry (once used) and PostgreSQL run."""
    from devstack.postgres import postgres_status

    plain, secured = _brokers()
    cluster = _cluster()
    clustered = cluster is not None and bool(cluster.running_pids())
    if not clustered or plain.running_pid() is not None:  # they share ports: one runs
        typer.echo(plain.status().describe())
    if secured.paths.devstack_dir.is_dir():
        typer.echo(secured.status().describe())
    if cluster is not None:
        for line in cluster.status().describe():
            typer.echo(line)
    registry = _registry()
    if registry.data.is_dir():
        typer.echo(registry.status().describe())
    typer.echo(postgres_status().describe())


@app.command()
def kill(node: NodeArgument) -> None:
    """Crash one node of the cluster (SIGKILL, as `kill -9`: no controlled shutdown)."""
    pid = _cluster_node(node).kill()
    typer.echo(f"node {node} killed pid={pid}" if pid else f"node {node} was not running")


@app.command()
def stop(node: NodeArgument) -> None:
    """Stop one node of the cluster cleanly (SIGTERM: its partitions move first)."""
    pid = _cluster_node(node).down()
    typer.echo(f"node {node} stopped pid={pid}" if pid else f"node {node} was not running")


@app.command()
def start(node: NodeArgument) -> None:
    """Start one node of the cluster again and wait until it answers."""
    cluster = _existing_cluster()
    started = cluster.start_node(node)
    status = cluster.node(node).status()
    verb = "started" if started else "already running"
    typer.echo(f"node {node} {verb} pid={status.pid} bootstrap={status.bootstrap}")


def _existing_cluster() -> KafkaCluster:
    from devstack.settings import DevstackError

    cluster = _cluster()
    if cluster is None:
        raise DevstackError("no cluster in this devstack: start one with `orderproc dev up "
                            "--brokers 3`")  # fmt: skip
    return cluster


def _cluster_node(node: int) -> KafkaBroker:
    return _existing_cluster().node(node)


def demo(
    orders: int = typer.Option(40, min=1, help="Orders to produce."),
    rate: float = typer.Option(20.0, min=0, help="Orders per second."),
    keep_running: bool = typer.Option(False, help="Leave the local broker running afterwards."),
) -> None:
    """Run the main job end to end on the local broker and the embedded SQLite store."""
    from devstack.demo import run_batch_cycle, run_live_stream
    from devstack.kafka import KafkaBroker, metadata_answers
    from devstack.settings import with_dev_defaults
    from orderproc.cli.common import settings_with
    from orderproc.kafka.topics import ensure_topics
    from orderproc.store.engine import open_engine, redacted
    from orderproc.store.migrate import upgrade

    settings = with_dev_defaults(settings_with())
    broker = KafkaBroker()
    # A broker already answering at ORDERPROC_BOOTSTRAP_SERVERS is used as it is.
    external = metadata_answers(settings.bootstrap_servers, 3.0)
    started = False if external else broker.up().started
    try:
        where = settings.bootstrap_servers if external else broker.status().describe()
        print(f"== broker: {where}")
        ensure_topics(settings)
        with open_engine(settings.effective_database_url) as engine:
            upgrade(engine)
        print(f"== store: {redacted(settings.effective_database_url)}")
        threshold = settings.price_threshold
        print(f"== live stream: {orders} orders at {rate}/s; price > {threshold:g} fails")
        summary = run_live_stream(settings, orders=orders, rate=rate, echo=print)
        print(
            "== summary: "
            f"processed={summary.get('processed', '?')} retried={summary.get('retried', '?')} "
            f"dead-lettered={summary.get('dead_lettered', '?')} "
            f"running average={summary.get('avg', '?')}"
        )
        run_batch_cycle(settings, echo=print)
    finally:
        if started and not keep_running:
            broker.down()
            print("== broker stopped (use --keep-running to leave it up)")
