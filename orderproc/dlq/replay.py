"""Replay reviewed DLQ events back to ``orders``, with lineage headers.

A run publishes in turns (``orderproc.dlq.turn``): each takes the replay lease,
fences and settles what earlier runs left, publishes rows of the run's frozen
selection, and releases its claims and the lease, so a run may stop between two turns
with nothing claimed. ``run_replay`` is a run in one turn: it takes every selected row
at once (what ``make demo`` and a replay without watching do). A run that watches the
live consumer's verdict (a canary, then steps) is ``orderproc.dlq.steps``.

1. take the replay lease (``orderproc.dlq.lease``), waiting (bounded) for a run that
   holds it to finish: runs take turns, and a waiting run fences nobody;
2. fence every earlier run in Kafka and settle what an ended run left pending
   (``orderproc.dlq.publish``);
3. record the run and freeze its selection (``orderproc.dlq.runs``), claim its rows,
   taking over those an ended run still names;
4. park rows at the replay cap, reject rows whose order no longer encodes;
5. publish the rest (rate limited) in Kafka transactions, chunk by chunk;
6. release the claims that were not published, then the lease.

Delivery semantics (exactly once, as a ``read_committed`` consumer sees ``orders``):
a row becomes ``replayed`` only once the transaction holding its copy committed;
whatever the interleaving of runs (two triggers, a trigger and an Airflow retry, the
review page and the CLI), and wherever one is killed or fenced, every approved row is
published once. A chunk whose delivery fails is aborted and its rows stay replayable;
the run then fails.

Lineage headers are not prefixed ``orderproc.``: the consumer keeps them across
later retry and DLQ hops, so a record that fails again still carries them, and
the drain takes its ``replay_count`` from ``replay.count``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer
from pydantic import ConfigDict, Field

from orderproc.config import Settings
from orderproc.dlq.claims import Delivered
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.lease import Lease
from orderproc.dlq.plan import (
    PARK,
    PUBLISH,
    REJECT,
    PlanAction,
    PlannedRow,
    plan_rows,
    why_not_taken,
)
from orderproc.dlq.publish import Crash
from orderproc.dlq.runs import RunState
from orderproc.dlq.store import DlqStore
from orderproc.dlq.turn import Clients, holding
from orderproc.errors import DeliveryError
from orderproc.kafka.access import check_settings, producer_access
from orderproc.kafka.clients import (
    replay_producer_config,
    replay_reader_config,
    transactional_delivery_timeout_ms,
)
from orderproc.models import DEFAULT_REPLAY_WAIT_S, DlqStatus, ReplayOptions
from orderproc.serde import OrderSerde, SchemalessSerde, serde_for, value_context
from orderproc.store.engine import open_engine, redacted, store_errors

log = logging.getLogger(__name__)


class ReplayRequest(ReplayOptions):
    """What to replay and how (the options' defaults and bounds are ``ReplayOptions``';
    the DAG's params, validated by ``ReplayParams``, become one with ``replay_request``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    selection: EventFilter = Field(
        default_factory=lambda: EventFilter(status=DlqStatus.APPROVED.value)
    )
    dry_run: bool = False
    wait_s: float = DEFAULT_REPLAY_WAIT_S
    """How long a turn waits for a run that holds the replay."""
    asked: dict[str, Any] = Field(default_factory=dict)
    """The request as it was asked, as JSON (the run keeps it: "resume" asks it again)."""


@dataclass
class ReplayResult:
    """Outcome of one run; ``to_dict()`` is what the DAG task returns."""

    replay_id: str
    topic: str
    dry_run: bool
    planned: list[PlannedRow] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    recovered: tuple[int, int] = (0, 0)  # an ended run's pending rows: (committed, aborted)
    schema: str = ""  # the schema the orders are written with: "id 7 (orders-value v3)"
    waited_for: str | None = None
    """The run this one waited for before it could start, if any."""
    not_taken: dict[int, str] = field(default_factory=dict)
    """Rows the selection named by id that this run did not take, and why (whose they are)."""

    def ids(self, action: PlanAction) -> list[int]:
        return [p.event_id for p in self.planned if p.action == action]

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "topic": self.topic,
            "dry_run": self.dry_run,
            "schema": self.schema,
            "planned": [{**asdict(p), "action": p.action.value} for p in self.planned],
            "published": [asdict(d) for d in self.delivered],
            "parked": self.ids(PARK),
            "rejected": self.ids(REJECT),
            "failed": {str(k): v for k, v in sorted(self.failed.items())},
            "recovered": list(self.recovered),
            "waited_for": self.waited_for,
            "not_taken": {str(k): v for k, v in sorted(self.not_taken.items())},
        }

    def counts(self) -> str:
        return (
            f"selected={len(self.planned)} publish={len(self.ids(PUBLISH))} "
            f"delivered={len(self.delivered)} failed={len(self.failed)} "
            f"parked={len(self.ids(PARK))} rejected={len(self.ids(REJECT))} "
            f"not_taken={len(self.not_taken)}"
        )


def replay_id_for(run_id: str | None) -> str:
    """A replay id that fits the 64-character columns: the run id when it does."""
    if not run_id:
        return f"replay-{uuid.uuid4().hex}"
    if len(run_id) <= 64:
        return run_id
    return f"replay-{hashlib.sha256(run_id.encode()).hexdigest()[:40]}"


# -- one run ---------------------------------------------------------------------------


def run_replay(
    store: DlqStore,
    request: ReplayRequest,
    *,
    topic: str,
    producer: Callable[[], Producer],
    reader: Callable[[], Consumer],
    replay_id: str | None = None,
    actor: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] | None = None,
    wait: Callable[[float], Any] = time.sleep,
    timeout_s: float = 60.0,
    transaction_timeout_s: float = 60.0,
    crash: Crash | None = None,
    make_lease: Callable[..., Lease] = Lease,
    serde: OrderSerde | None = None,
    dlq_topic: str | None = None,
) -> ReplayResult:
    """Replay the selected DLQ events to ``topic`` in one turn; see the module docstring.

    Orders are validated against and written with ``serde``'s schema (default: the local
    one), resolved before anything else: a registry silent for ``timeout_s`` fails the
    run with nothing claimed.

    ``producer`` (transactional: the replay's transactional id) is called first: a broker
    that refuses us (credentials, certificate, ACLs: a ``BrokerError``) fails the run
    with nothing claimed. ``reader`` (a ``read_committed`` consumer, unsubscribed) reads
    back what an ended run left pending, and where ``dlq_topic`` ends (the run's copies
    that fail again are looked for from there). ``sleep`` spaces paced records (default:
    serve delivery reports meanwhile); ``wait`` is slept between looks at a busy lease.
    ``crash`` and ``make_lease`` are seams for tests of interleavings.

    Raises:
        ReplayBusyError: another run held the replay for all of ``request.wait_s``.
        ReplayFencedError: a newer run took over; what this one left is that run's.
        DeliveryError: a chunk was not acknowledged or did not commit (its rows stay
            replayable; the committed chunks are marked ``replayed``).
    """
    replay_id = replay_id or replay_id_for(None)
    actor = actor or f"replay:{replay_id}"
    result = ReplayResult(replay_id=replay_id, topic=topic, dry_run=request.dry_run)
    serde = serde or SchemalessSerde()
    schema = serde.writer_schema_within(timeout_s, value_context(topic))
    result.schema = schema.describe()
    if request.dry_run:
        events = store.select_for_replay(request.selection, limit=request.max_messages)
        result.planned = plan_rows(events, max_replays=request.max_replays, schema=schema)
        result.not_taken = not_taken(store, request.selection, result.planned)
        log.info("replay dry run: %s", result.counts())
        return result
    clients = Clients(
        topic, producer, reader, serde, dlq_topic, clock, sleep, wait, timeout_s,
        transaction_timeout_s, crash or (lambda _point: None), make_lease,
    )  # fmt: skip
    with holding(store, clients, result, actor=actor, wait_s=request.wait_s,
                 schema=schema) as turn:  # fmt: skip
        run = turn.begin(request)
        turn.publish(store.queued(replay_id), request)
        if result.failed:
            said = f"stopped: {len(result.failed)} records were not published"
            store.end_run(turn.lease, RunState.STOPPED, said=said, failed=True, actor=actor)
        else:
            said = f"finished: published {len(result.delivered)} of {len(result.planned)} rows"
            store.end_run(turn.lease, RunState.FINISHED, said=said, failed=False, actor=actor)
    result.not_taken = {int(k): str(v) for k, v in (run.not_taken or {}).items()}
    if run.not_taken is None:
        result.not_taken = not_taken(store, request.selection, result.planned)
    log.info("replay %s: %s", replay_id, result.counts())
    raise_if_failed(result)
    return result


def raise_if_failed(result: ReplayResult) -> None:
    """A run with records that were not published fails, saying which (one line).

    Raises:
        DeliveryError: some records were not published; they stay replayable.
    """
    if result.failed:
        first = next(iter(result.failed.items()))
        raise DeliveryError(
            f"{len(result.failed)} of {len(result.ids(PUBLISH))} replayed records were not "
            f"published (event {first[0]}: {first[1]}); they stay replayable"
        )


def not_taken(
    store: DlqStore, selection: EventFilter, planned: Sequence[PlannedRow]
) -> dict[int, str]:
    """For a selection by id (a dry run): the ids it would not take, and why."""
    missing = sorted(set(selection.ids) - {p.event_id for p in planned})
    if not missing:
        return {}
    events = {e.id: e for e in store.list_events(EventFilter(ids=tuple(missing)),
                                                 limit=len(missing))}  # fmt: skip
    return {i: why_not_taken(events.get(i), selection) for i in missing}


def settings_producer(settings: Settings) -> Producer:
    """The replay's producer built from the settings, once Kafka accepts it.

    Raises:
        BrokerError: Kafka refuses the credentials, the certificate or a write to the
            orders topic, or does not answer.
    """
    check_settings(settings, producer_access(settings))
    return Producer(replay_producer_config(settings))


def clients_for(
    settings: Settings,
    *,
    producer: Callable[[], Producer] | None = None,
    reader: Callable[[], Consumer] | None = None,
    crash: Crash | None = None,
) -> Clients:
    """What a run's turns publish and look with, from the settings (clients default to
    ones built from them)."""
    return Clients(
        topic=settings.orders_topic,
        producer=producer or (lambda: settings_producer(settings)),
        reader=reader or (lambda: Consumer(replay_reader_config(settings))),
        serde=serde_for(settings, latest=True),
        dlq_topic=settings.dlq_topic,
        timeout_s=transactional_delivery_timeout_ms(settings) / 1000 + 5,
        transaction_timeout_s=settings.transaction_timeout_ms / 1000,
        crash=crash or (lambda _point: None),
    )


def replay_with_settings(
    settings: Settings,
    request: ReplayRequest,
    *,
    database_url: str | None = None,
    replay_id: str | None = None,
    actor: str | None = None,
    producer: Callable[[], Producer] | None = None,
    reader: Callable[[], Consumer] | None = None,
    crash: Crash | None = None,
) -> ReplayResult:
    """Replay to ``settings.orders_topic`` in one turn; clients default to ones from the
    settings.

    Raises:
        StoreError: the store cannot be reached (one line, no password).
    """
    c = clients_for(settings, producer=producer, reader=reader, crash=crash)
    url = database_url or settings.effective_database_url
    with store_errors(f"the DLQ store at {redacted(url)} failed"), open_engine(url) as engine:
        return run_replay(
            DlqStore(engine), request, topic=c.topic, producer=c.producer, reader=c.reader,
            replay_id=replay_id, actor=actor, timeout_s=c.timeout_s,
            transaction_timeout_s=c.transaction_timeout_s, crash=crash, serde=c.serde,
            dlq_topic=c.dlq_topic,
        )  # fmt: skip
