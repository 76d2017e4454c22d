"""Replay reviewed DLQ events back to ``orders``, with lineage headers.

One run: fence every earlier replay and settle what a dead one left pending
(``orderproc.dlq.publish``), claim the selected rows atomically (taking over the
claims of fenced runs), park rows that reached the replay cap, reject rows whose
order no longer encodes with the Avro schema, and publish the rest (rate limited)
in Kafka transactions, chunk by chunk.

Delivery semantics (exactly once, as a ``read_committed`` consumer sees ``orders``):
a row becomes ``replayed`` only once the transaction holding its copy committed;
a run killed at any point and rerun at once (or retried by Airflow) publishes
every approved row once. A chunk whose delivery fails is aborted and its rows stay
replayable; the run then fails.

Lineage headers are not prefixed ``orderproc.``: the consumer keeps them across
later retry and DLQ hops, so a record that fails again still carries them, and
the drain takes its ``replay_count`` from ``replay.count``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer
from tabulate import tabulate

from orderproc import headers as h
from orderproc.clock import Pacer
from orderproc.config import Settings
from orderproc.dlq.claims import Delivered
from orderproc.dlq.corrections import payload_of, validated_order
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.publish import Crash, commit_chunk, fence, resolve_pending
from orderproc.dlq.store import DlqStore
from orderproc.errors import DeliveryError, ReviewError
from orderproc.headers import Header
from orderproc.kafka.access import check_settings, producer_access
from orderproc.kafka.clients import (
    produce,
    replay_producer_config,
    replay_reader_config,
    transactional_delivery_timeout_ms,
)
from orderproc.models import DEFAULT_MAX_REPLAYS, DlqStatus
from orderproc.serde import OrderSchema, OrderSerde, SchemalessSerde, serde_for, value_context
from orderproc.store.engine import open_engine
from orderproc.store.tables import DlqEvent

log = logging.getLogger(__name__)

PUBLISH, PARK, REJECT = "publish", "park", "reject"

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


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """What a run does (or a dry run would do) with one DLQ event."""

    event_id: int
    order_id: str | None
    action: str
    replay_count: int
    payload: dict[str, Any] | None = None
    note: str | None = None


@dataclass
class ReplayResult:
    """Outcome of one run; ``to_dict()`` is what the DAG task returns."""

    replay_id: str
    topic: str
    dry_run: bool
    planned: list[PlannedRow] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    recovered: tuple[int, int] = (0, 0)  # a dead replay's pending rows: (committed, aborted)
    schema: str = ""  # the schema the orders are written with: "id 7 (orders-value v3)"

    def ids(self, action: str) -> list[int]:
        return [p.event_id for p in self.planned if p.action == action]

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "topic": self.topic,
            "dry_run": self.dry_run,
            "schema": self.schema,
            "planned": [asdict(p) for p in self.planned],
            "published": [asdict(d) for d in self.delivered],
            "parked": self.ids(PARK),
            "rejected": self.ids(REJECT),
            "failed": {str(k): v for k, v in sorted(self.failed.items())},
        }


# -- pure steps ------------------------------------------------------------------------


def plan_rows(
    events: Sequence[DlqEvent], *, max_replays: int, schema: OrderSchema | None = None
) -> list[PlannedRow]:
    """Decide per event: park (cap reached), reject (not an order of ``schema``) or publish."""
    return [_plan_one(e, max_replays, schema) for e in events]


def _plan_one(event: DlqEvent, max_replays: int, schema: OrderSchema | None) -> PlannedRow:
    def planned(action: str, **extra: Any) -> PlannedRow:
        return PlannedRow(event.id, event.order_id, action, event.replay_count, **extra)

    if event.replay_count >= max_replays:
        return planned(PARK, note=f"replay cap reached ({event.replay_count} of {max_replays})")
    try:
        payload = validated_order(payload_of(event) or {}, context=f"event {event.id}",
                                  schema=schema)  # fmt: skip
    except ReviewError as exc:
        return planned(REJECT, note=f"not replayable: {exc}")
    return planned(PUBLISH, payload=payload)


def lineage_headers(event: DlqEvent, replay_id: str) -> list[Header]:
    """Headers that tie the replayed copy to its DLQ record and count the replays."""
    pairs = {
        h.REPLAY_ID: replay_id,
        h.REPLAY_COUNT: str(event.replay_count + 1),
        h.REPLAY_DLQ_TOPIC: event.dlq_topic,
        h.REPLAY_DLQ_PARTITION: str(event.dlq_partition),
        h.REPLAY_DLQ_OFFSET: str(event.dlq_offset),
    }
    return [(k, v.encode()) for k, v in pairs.items()]


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
    timeout_s: float = 60.0,
    transaction_timeout_s: float = 60.0,
    crash: Crash | None = None,
    serde: OrderSerde | None = None,
) -> ReplayResult:
    """Replay the selected DLQ events to ``topic``; see the module docstring.

    Orders are validated against and written with ``serde``'s schema (default: the local
    one), resolved before any claim: a registry silent for ``timeout_s`` fails the run.

    ``producer`` (transactional: the replay's transactional id) and ``reader`` (a
    ``read_committed`` consumer, unsubscribed) are called only for a real run, before
    any row is claimed: a broker that refuses us (credentials, certificate, ACLs: a
    ``BrokerError`` from the factory) fails the run with nothing claimed, parked or
    rejected. ``sleep`` defaults to polling the producer, so delivery reports are
    served while the pacer waits.

    Raises:
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
        log.info("replay dry run: %s", _counts(result))
        return result
    kafka = producer()
    fence(kafka, timeout_s)  # from here on no earlier replay can commit anything
    consumer = reader()
    try:
        result.recovered = resolve_pending(store, consumer, topic, actor=actor,
                                           timeout_s=timeout_s)  # fmt: skip
    finally:
        consumer.close()
    # One claimer per attempt; the run id stays the lineage id.
    claimer = f"{replay_id[:40]}#{uuid.uuid4().hex[:12]}"
    claimed = store.claim(request.selection, claimer=claimer, limit=request.max_messages,
                          take_over=True)  # fmt: skip
    try:
        result.planned = plan_rows(claimed, max_replays=request.max_replays, schema=schema)
        _settle(store, result, actor, claimer)
        chunk = _chunk_size(request.rate_per_sec, transaction_timeout_s)
        pacer = Pacer(request.rate_per_sec, clock=clock, sleep=sleep or kafka.poll)
        by_id = {e.id: e for e in claimed}
        rows = [p for p in result.planned if p.action == PUBLISH]
        for start in range(0, len(rows), chunk):
            part = [(row, by_id[row.event_id]) for row in rows[start : start + chunk]]
            if not _publish_chunk(kafka, store, part, result, claimer, actor, pacer,
                                  timeout_s, crash or (lambda _point: None), serde):  # fmt: skip
                break
    finally:
        store.release(claimer=claimer)  # rows never committed; pending ones are kept
    log.info("replay %s: %s", replay_id, _counts(result))
    if result.failed:
        first = next(iter(result.failed.items()))
        raise DeliveryError(
            f"{len(result.failed)} of {len(result.ids(PUBLISH))} replayed records were not "
            f"published (event {first[0]}: {first[1]}); they stay replayable"
        )
    return result


def _chunk_size(rate_per_sec: float, transaction_timeout_s: float) -> int:
    """Rows per transaction: a paced chunk must finish well inside the transaction timeout."""
    if rate_per_sec <= 0:
        return CHUNK
    return max(1, min(CHUNK, int(rate_per_sec * transaction_timeout_s / 2)))


def _settle(store: DlqStore, result: ReplayResult, actor: str, claimer: str) -> None:
    for row in result.planned:
        if row.action == PARK:
            store.park([row.event_id], claimer=claimer, actor=actor, note=row.note or "")
        elif row.action == REJECT:
            store.reject_claimed(row.event_id, claimer=claimer, actor=actor, note=row.note or "")


def _publish_chunk(
    kafka: Producer,
    store: DlqStore,
    rows: Sequence[tuple[PlannedRow, DlqEvent]],
    result: ReplayResult,
    claimer: str,
    actor: str,
    pacer: Pacer,
    timeout_s: float,
    crash: Crash,
    serde: OrderSerde,
) -> bool:
    """One chunk in one transaction (``orderproc.dlq.publish``); False when it failed."""
    delivered: list[Delivered] = []
    failed: dict[int, str] = {}
    kafka.begin_transaction()
    for row, event in rows:
        pacer.wait()
        produce(
            kafka,
            result.topic,
            key=(event.message_key or row.order_id or "").encode() or None,
            value=serde.serialize(row.payload or {}, value_context(result.topic)),
            headers=lineage_headers(event, result.replay_id),
            on_delivery=_reporter(row.event_id, delivered, failed),
        )
    crash("produced")
    remaining = kafka.flush(timeout_s)
    crash("acknowledged")
    ids = [row.event_id for row, _ in rows]
    if failed or remaining:
        kafka.abort_transaction(timeout_s)
        why = next(iter(failed.values()), f"no delivery report within {timeout_s:.0f}s")
        result.failed.update({i: failed.get(i, f"aborted with its chunk: {why}") for i in ids})
        return False
    problem = commit_chunk(kafka, store, delivered, claimer=claimer, replay_id=result.replay_id,
                           actor=actor, timeout_s=timeout_s, crash=crash)  # fmt: skip
    if problem:
        result.failed.update(dict.fromkeys(ids, problem))
        return False
    result.delivered += delivered
    return True


def _reporter(
    event_id: int, delivered: list[Delivered], failed: dict[int, str]
) -> Callable[[KafkaError | None, Message], None]:
    # Delivery callbacks run inside poll()/flush() on this thread: no lock needed.
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed[event_id] = err.str()
            return
        delivered.append(
            Delivered(event_id, msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        )

    return on_delivery


def _counts(result: ReplayResult) -> str:
    return (
        f"selected={len(result.planned)} publish={len(result.ids(PUBLISH))} "
        f"delivered={len(result.delivered)} failed={len(result.failed)} "
        f"parked={len(result.ids(PARK))} rejected={len(result.ids(REJECT))}"
    )


def summary_markdown(result: Mapping[str, Any]) -> str:
    """A Markdown table of a run (``ReplayResult.to_dict()``), for the task log."""
    delivered = {int(d["event_id"]): d for d in result.get("published", [])}
    failed = {int(k): v for k, v in result.get("failed", {}).items()}
    mode = "dry run" if result.get("dry_run") else "replay"
    rows = []
    for row in result.get("planned", []):
        eid = int(row["event_id"])
        price = (row.get("payload") or {}).get("price")
        outcome = _outcome(row, delivered.get(eid), failed.get(eid), bool(result.get("dry_run")))
        shown = "-" if price is None else f"{price:.2f}"
        rows.append(
            [eid, row.get("order_id") or "-", row["action"], row["replay_count"], shown, outcome]
        )
    if not rows:
        rows.append(["-", "-", "nothing selected", "-", "-", "-"])
    headers = ["event", "order", "action", "replays", "price", "outcome"]
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    schema = f" with {result['schema']}" if result.get("schema") else ""
    return f"{mode} {result.get('replay_id')} -> {result.get('topic')}{schema}\n\n{table}"


def _outcome(
    row: Mapping[str, Any], delivered: Mapping[str, Any] | None, failed: str | None, dry: bool
) -> str:
    if row["action"] != PUBLISH:
        return str(row.get("note") or "")
    if dry:
        return "would publish"
    if delivered is not None:
        return f"partition {delivered['partition']} offset {delivered['offset']}"
    return f"FAILED: {failed}" if failed else "not published"


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
    """Replay to ``settings.orders_topic``; clients default to ones from the settings."""
    with open_engine(database_url or settings.effective_database_url) as engine:
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
