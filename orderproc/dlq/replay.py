"""Replay reviewed DLQ events back to ``orders``, with lineage headers.

One run: claim the selected rows atomically (two runs never publish the same
row), park rows that reached the replay cap, reject rows whose order no longer
encodes with the Avro schema, publish the rest (rate limited), wait for every
delivery report, then mark the acknowledged rows ``replayed``.

Delivery semantics (at-least-once): a row is marked ``replayed`` only after the
broker acknowledged its copy. A failed or unconfirmed delivery releases the row's
claim and fails the run, so the row can be replayed again. If the process dies
after a delivery but before the database update, the claim expires
(``claim_ttl_s``) and the row is replayed twice; the consumer is idempotent on
``orderId``, so that costs a duplicate record, not a duplicate order.

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
from datetime import timedelta
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tabulate import tabulate

from orderproc import headers as h
from orderproc.clock import Pacer, utcnow
from orderproc.config import Settings
from orderproc.dlq.corrections import payload_of, validated_order
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.store import Delivered, DlqStore
from orderproc.errors import DeliveryError, ReviewError
from orderproc.headers import Header
from orderproc.kafka.access import check_settings, producer_access
from orderproc.kafka.clients import produce, reliable_producer_config
from orderproc.models import DEFAULT_MAX_REPLAYS, DlqStatus
from orderproc.serde import OrderSerde
from orderproc.store.engine import open_engine
from orderproc.store.tables import DlqEvent

log = logging.getLogger(__name__)

PUBLISH, PARK, REJECT = "publish", "park", "reject"


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
    attempted: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)

    def releasable(self) -> list[int]:
        """Rows to publish that surely were not written: never sent, or refused by the broker."""
        delivered = {d.event_id for d in self.delivered}
        return [i for i in self.ids(PUBLISH) if i not in delivered and i not in self.unknown]

    def ids(self, action: str) -> list[int]:
        return [p.event_id for p in self.planned if p.action == action]

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "topic": self.topic,
            "dry_run": self.dry_run,
            "planned": [asdict(p) for p in self.planned],
            "published": [asdict(d) for d in self.delivered],
            "parked": self.ids(PARK),
            "rejected": self.ids(REJECT),
            "failed": {str(k): v for k, v in sorted(self.failed.items())},
        }


# -- pure steps ------------------------------------------------------------------------


def plan_rows(events: Sequence[DlqEvent], *, max_replays: int) -> list[PlannedRow]:
    """Decide per event: park (cap reached), reject (not a valid order) or publish."""
    return [_plan_one(e, max_replays) for e in events]


def _plan_one(event: DlqEvent, max_replays: int) -> PlannedRow:
    def planned(action: str, **extra: Any) -> PlannedRow:
        return PlannedRow(event.id, event.order_id, action, event.replay_count, **extra)

    if event.replay_count >= max_replays:
        return planned(PARK, note=f"replay cap reached ({event.replay_count} of {max_replays})")
    try:
        payload = validated_order(payload_of(event) or {}, context=f"event {event.id}")
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
    replay_id: str | None = None,
    actor: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] | None = None,
    flush_timeout_s: float = 60.0,
    claim_ttl_s: float = 3600.0,
) -> ReplayResult:
    """Replay the selected DLQ events to ``topic``; see the module docstring.

    ``producer`` is called once before any row is claimed (never in a dry run), so
    a broker that refuses us (credentials, certificate, ACLs: a ``BrokerError``
    from the factory) fails the run with nothing claimed, parked or rejected.
    ``sleep`` defaults to polling the producer, so delivery reports are served
    while the rate limiter waits.

    Raises:
        DeliveryError: some records were not acknowledged (their rows stay
            replayable; the acknowledged ones are marked ``replayed``).
    """
    replay_id = replay_id or replay_id_for(None)
    actor = actor or f"replay:{replay_id}"
    result = ReplayResult(replay_id=replay_id, topic=topic, dry_run=request.dry_run)
    if request.dry_run:
        events = store.select_for_replay(request.selection, limit=request.max_messages)
        result.planned = plan_rows(events, max_replays=request.max_replays)
        log.info("replay dry run: %s", _counts(result))
        return result
    # A claim must outlive the slowest run the request allows, or another run could take
    # rows this one is still publishing.
    if request.rate_per_sec > 0:
        claim_ttl_s = max(claim_ttl_s, 2 * request.max_messages / request.rate_per_sec)
    stale_before = utcnow() - timedelta(seconds=claim_ttl_s + flush_timeout_s)
    # One claimer per attempt: an Airflow retry of the same run must not share the claims of
    # an attempt that may still be running; the run id stays the lineage id.
    claimer = f"{replay_id[:40]}#{uuid.uuid4().hex[:12]}"
    ready = producer()
    claimed = store.claim(
        request.selection, claimer=claimer, limit=request.max_messages, stale_before=stale_before
    )
    published = False
    try:
        result.planned = plan_rows(claimed, max_replays=request.max_replays)
        _settle(store, result, actor, claimer)
        published = True  # from here on, rows with an unknown outcome keep their claim
        _publish_planned(store, result, claimed, ready, request, clock, sleep, flush_timeout_s)
    finally:
        # What the broker acknowledged is recorded even when publishing stopped half way;
        # rows with an unknown outcome keep their claim until it expires (never published
        # twice by a quick rerun); only rows never handed to the producer are released.
        store.mark_replayed(result.delivered, claimer=claimer, replay_id=replay_id, actor=actor)
        store.release(claimer=claimer, ids=None if not published else result.releasable())
    log.info("replay %s: %s", replay_id, _counts(result))
    if result.failed:
        first = next(iter(result.failed.items()))
        raise DeliveryError(
            f"{len(result.failed)} of {len(result.ids(PUBLISH))} replayed records were not "
            f"acknowledged (event {first[0]}: {first[1]}); they stay replayable"
        )
    return result


def _settle(store: DlqStore, result: ReplayResult, actor: str, claimer: str) -> None:
    for row in result.planned:
        if row.action == PARK:
            store.park([row.event_id], claimer=claimer, actor=actor, note=row.note or "")
        elif row.action == REJECT:
            store.reject_claimed(row.event_id, claimer=claimer, actor=actor, note=row.note or "")


def _publish_planned(
    store: DlqStore,
    result: ReplayResult,
    events: Sequence[DlqEvent],
    producer: Producer,
    request: ReplayRequest,
    clock: Callable[[], float],
    sleep: Callable[[float], Any] | None,
    flush_timeout_s: float,
) -> None:
    rows = [p for p in result.planned if p.action == PUBLISH]
    if not rows:
        return
    pacer = Pacer(request.rate_per_sec, clock=clock, sleep=sleep or producer.poll)
    by_id = {e.id: e for e in events}
    serde = OrderSerde()
    try:
        for row in rows:
            pacer.wait()
            event = by_id[row.event_id]
            key = (event.message_key or row.order_id or "").encode() or None
            value = serde.encode_record(row.payload or {})
            on_delivery = _reporter(result, row.event_id)
            try:
                produce(
                    producer,
                    result.topic,
                    key=key,
                    value=value,
                    headers=lineage_headers(event, result.replay_id),
                    on_delivery=on_delivery,
                )
                result.attempted.add(row.event_id)
            except KafkaException as exc:
                result.failed[row.event_id] = str(exc.args[0])
    finally:
        # Even when publishing stops half way, learn what the broker has acknowledged.
        remaining = producer.flush(flush_timeout_s)
        delivered = {d.event_id for d in result.delivered}
        for event_id in result.attempted - delivered - set(result.failed):
            result.unknown.add(event_id)
            result.failed[event_id] = (
                f"no delivery report within {flush_timeout_s:.0f}s ({remaining} pending)"
            )


def _reporter(result: ReplayResult, event_id: int) -> Callable[[KafkaError | None, Message], None]:
    # Delivery callbacks run inside poll()/flush() on this thread: no lock needed.
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            result.failed[event_id] = err.str()
            return
        result.delivered.append(
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
    table = tabulate(
        rows,
        headers=["event", "order", "action", "replays", "price", "outcome"],
        tablefmt="github",
        disable_numparse=True,
    )
    return f"{mode} {result.get('replay_id')} -> {result.get('topic')}\n\n{table}"


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
    return Producer(reliable_producer_config(settings))


def replay_with_settings(
    settings: Settings,
    request: ReplayRequest,
    *,
    database_url: str | None = None,
    replay_id: str | None = None,
    actor: str | None = None,
    producer: Callable[[], Producer] | None = None,
) -> ReplayResult:
    """Replay to ``settings.orders_topic``; the producer defaults to one from the settings."""
    with open_engine(database_url or settings.effective_database_url) as engine:
        return run_replay(
            DlqStore(engine),
            request,
            topic=settings.orders_topic,
            producer=producer or (lambda: settings_producer(settings)),
            replay_id=replay_id,
            actor=actor,
        )
