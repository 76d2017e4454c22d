"""Replay reviewed DLQ events back to ``orders``, with lineage headers.

One run, in steps (each a function below, so a run that stops between two of them
leaves its claims released and the lease free):

1. take the replay lease (``orderproc.dlq.lease``), waiting (bounded) for a run that
   holds it to finish: runs take turns, and a waiting run fences nobody;
2. fence every earlier run in Kafka and settle what an ended run left pending
   (``orderproc.dlq.publish``);
3. claim the selected rows, taking over those an ended run still names;
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
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from orderproc.clock import Pacer
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
    lineage_headers,
    plan_rows,
    why_not_taken,
)
from orderproc.dlq.publish import Copy, Crash, fence, publish_chunk, resolve_pending
from orderproc.dlq.store import DlqStore
from orderproc.errors import DeliveryError, OrderProcError, ReplayFencedError
from orderproc.kafka.access import check_settings, producer_access
from orderproc.kafka.clients import (
    poll_for,
    replay_producer_config,
    replay_reader_config,
    transactional_delivery_timeout_ms,
)
from orderproc.models import DEFAULT_MAX_REPLAYS, DEFAULT_REPLAY_WAIT_S, DlqStatus
from orderproc.serde import OrderSerde, SchemalessSerde, serde_for, value_context
from orderproc.store.engine import open_engine, redacted, store_errors
from orderproc.store.tables import DlqEvent

log = logging.getLogger(__name__)


CHUNK = 100
"""Rows published per Kafka transaction (fewer when paced: see ``_chunk_size``)."""


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay and how fast (the DAG's params, validated by ``ReplayParams``)."""

    selection: EventFilter = field(
        default_factory=lambda: EventFilter(status=DlqStatus.APPROVED.value)
    )
    max_messages: int = 100
    rate_per_sec: float = 0.0
    dry_run: bool = False
    max_replays: int = DEFAULT_MAX_REPLAYS
    wait_s: float = DEFAULT_REPLAY_WAIT_S


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
) -> ReplayResult:
    """Replay the selected DLQ events to ``topic``; see the module docstring.

    Orders are validated against and written with ``serde``'s schema (default: the local
    one), resolved before anything else: a registry silent for ``timeout_s`` fails the
    run with nothing claimed.

    ``producer`` (transactional: the replay's transactional id) is called first: a broker
    that refuses us (credentials, certificate, ACLs: a ``BrokerError``) fails the run
    with nothing claimed. ``reader`` (a ``read_committed`` consumer, unsubscribed) reads
    back what an ended run left pending. ``sleep`` spaces paced records (default: serve
    delivery reports meanwhile); ``wait`` is slept between looks at a busy lease.
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
        result.not_taken = _not_taken(store, request.selection, result.planned)
        log.info("replay dry run: %s", result.counts())
        return result
    crash = crash or (lambda _point: None)
    kafka = producer()
    # One claimer per attempt; the run id stays the lineage id.
    lease = make_lease(store.engine, replay_id=replay_id,
                       claimer=f"{replay_id[:40]}#{uuid.uuid4().hex[:12]}", sleep=wait)  # fmt: skip
    waited = lease.acquire(request.wait_s)
    result.waited_for = str(waited) if waited else None
    try:
        crash("leased")
        _take_over(kafka, reader, store, lease, result, actor, timeout_s, crash)
        claimed = store.claim(request.selection, lease=lease, limit=request.max_messages)
        crash("claimed")
        result.planned = plan_rows(claimed, max_replays=request.max_replays, schema=schema)
        _settle(store, lease, result, actor)
        pacer = Pacer(request.rate_per_sec, clock=clock,
                      sleep=sleep or (lambda s: poll_for(kafka, s)))  # fmt: skip
        chunk = _chunk_size(request.rate_per_sec, transaction_timeout_s)
        _publish(kafka, store, lease, claimed, result, actor, pacer, chunk, timeout_s, crash,
                 serde)  # fmt: skip
    except ReplayFencedError as exc:
        left = _after_fence(store, lease, reader, result, actor, timeout_s)
        raise ReplayFencedError(
            f"{exc} (it had published {len(result.delivered)} of the "
            f"{len(result.ids(PUBLISH))} rows it took; {left})"
        ) from exc
    finally:
        _let_go(store, lease)
    result.not_taken = _not_taken(store, request.selection, result.planned)
    log.info("replay %s: %s", replay_id, result.counts())
    if result.failed:
        first = next(iter(result.failed.items()))
        raise DeliveryError(
            f"{len(result.failed)} of {len(result.ids(PUBLISH))} replayed records were not "
            f"published (event {first[0]}: {first[1]}); they stay replayable"
        )
    return result


def _let_go(store: DlqStore, lease: Lease) -> None:
    """Release the run's claims (rows never committed; pending ones are the next run's),
    then the lease, whatever happens to the first: a failure here is logged, never raised
    over the run's own outcome, and the lease is let go in any case."""
    try:
        store.release(lease)
    except Exception as exc:  # the next run frees them (release_ended); keep the real error
        log.warning("replay %s could not release its claims: %s", lease.replay_id, exc)
    finally:
        lease.release()


def _take_over(
    kafka: Producer,
    reader: Callable[[], Consumer],
    store: DlqStore,
    lease: Lease,
    result: ReplayResult,
    actor: str,
    timeout_s: float,
    crash: Crash,
) -> None:
    """Fence every earlier run in Kafka, settle the rows they left pending, free the rows
    they still claim."""
    fence(kafka, timeout_s)  # from here on no earlier run can commit anything
    crash("fenced")
    with closing(reader()) as consumer:
        result.recovered = resolve_pending(store, lease, consumer, result.topic, actor=actor,
                                           timeout_s=timeout_s)  # fmt: skip
    freed = store.release_ended(lease)  # every other claimer has ended: nothing stays theirs
    if freed:
        log.info("replay %s freed %d rows an ended run still claimed", result.replay_id, freed)
    crash("resolved")


def _after_fence(
    store: DlqStore,
    lease: Lease,
    reader: Callable[[], Consumer],
    result: ReplayResult,
    actor: str,
    timeout_s: float,
) -> str:
    """What a fenced run leaves, and to whom.

    Fenced by a newer run (the lease is gone): that run settles everything. Fenced only in
    Kafka (someone else initialised the transactional id) while it still holds the lease:
    its transaction is decided now, committed or aborted, so it settles its own pending
    rows, and no row stays claimed by a run that has ended.
    """
    if not lease.holds():
        return "the rest are left to the run that holds the replay"
    try:
        with closing(reader()) as consumer:
            committed, aborted = resolve_pending(store, lease, consumer, result.topic,
                                                 actor=actor, timeout_s=timeout_s)  # fmt: skip
    except OrderProcError as exc:
        return f"its pending rows stay for the next run to settle ({exc})"
    return f"it settled its pending rows: {committed} committed, {aborted} aborted"


def _chunk_size(rate_per_sec: float, transaction_timeout_s: float) -> int:
    """Rows per transaction: a paced chunk must finish well inside the transaction timeout."""
    if rate_per_sec <= 0:
        return CHUNK
    return max(1, min(CHUNK, int(rate_per_sec * transaction_timeout_s / 2)))


def _settle(store: DlqStore, lease: Lease, result: ReplayResult, actor: str) -> None:
    for row in result.planned:
        if row.action == PARK:
            store.park([row.event_id], lease=lease, actor=actor, note=row.note or "")
        elif row.action == REJECT:
            store.reject_claimed(row.event_id, lease=lease, actor=actor, note=row.note or "")


def _publish(
    kafka: Producer,
    store: DlqStore,
    lease: Lease,
    claimed: Sequence[DlqEvent],
    result: ReplayResult,
    actor: str,
    pacer: Pacer,
    chunk: int,
    timeout_s: float,
    crash: Crash,
    serde: OrderSerde,
) -> None:
    """Publish the planned rows chunk by chunk; stop at the first chunk that fails."""
    by_id = {e.id: e for e in claimed}
    rows = [p for p in result.planned if p.action == PUBLISH]
    for start in range(0, len(rows), chunk):
        copies = [
            Copy(
                row.event_id,
                (by_id[row.event_id].message_key or row.order_id or "").encode() or None,
                serde.serialize(row.payload or {}, value_context(result.topic)),
                lineage_headers(by_id[row.event_id], result.replay_id),
            )
            for row in rows[start : start + chunk]
        ]
        done = publish_chunk(kafka, store, lease, result.topic, copies, actor=actor,
                             pacer=pacer, timeout_s=timeout_s, crash=crash)  # fmt: skip
        result.delivered += done.delivered
        if done.failed:
            result.failed.update(done.failed)
            return


def _not_taken(
    store: DlqStore, selection: EventFilter, planned: Sequence[PlannedRow]
) -> dict[int, str]:
    """For a selection by id: the ids this run did not take, and why."""
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
    """Replay to ``settings.orders_topic``; clients default to ones from the settings.

    Raises:
        StoreError: the store cannot be reached (one line, no password).
    """
    url = database_url or settings.effective_database_url
    with store_errors(f"the DLQ store at {redacted(url)} failed"), open_engine(url) as engine:
        return run_replay(
            DlqStore(engine),
            request,
            topic=settings.orders_topic,
            producer=producer or (lambda: settings_producer(settings)),
            reader=reader or (lambda: Consumer(replay_reader_config(settings))),
            replay_id=replay_id,
            actor=actor,
            timeout_s=transactional_delivery_timeout_ms(settings) / 1000 + 5,
            transaction_timeout_s=settings.transaction_timeout_ms / 1000,
            crash=crash,
            serde=serde_for(settings, latest=True),
        )
