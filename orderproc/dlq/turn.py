"""One turn of a replay run: one holding of the replay lease, in which the run publishes.

A run that watches its outcomes spans several turns (the canary, then the steps), and
waits between them *without* the lease: no lock is held across a wait (or an Airflow
deferral), so other runs may take their turns meanwhile. Each turn is a new lease
holder: it waits (bounded) for a live holder to finish, then fences every earlier
producer of the replay's transactional id and settles what an ended turn left
pending (``orderproc.dlq.publish``). The turn before it has ended, or died (then its
lock died with it), so this fences nobody alive. What carries the run from one turn to
the next is its record in the store (``orderproc.dlq.runs``): its frozen selection, the
rows still queued, its verdicts.

Within a turn (``holding``): take the lease, fence and settle, then ``begin`` (record
the run, or find it) and ``publish`` queued rows (claim, park or reject, publish in
chunks); whatever happens, the turn's claims on rows it did not publish are released,
then the lease. A turn fenced by a newer one changes nothing more.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer

from orderproc.clock import Pacer
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.lease import Lease
from orderproc.dlq.outcomes import dlq_ends
from orderproc.dlq.plan import PARK, PUBLISH, REJECT, lineage_headers, plan_rows
from orderproc.dlq.publish import Copy, Crash, fence, publish_chunk, resolve_pending
from orderproc.dlq.store import DlqStore
from orderproc.errors import OrderProcError, ReplayFencedError
from orderproc.kafka.clients import poll_for
from orderproc.models import DlqStatus, ReplayOptions
from orderproc.serde import OrderSchema, OrderSerde, value_context
from orderproc.store.tables import ReplayRun

if TYPE_CHECKING:
    from orderproc.dlq.replay import ReplayRequest, ReplayResult

log = logging.getLogger(__name__)

CHUNK = 100
"""Rows published per Kafka transaction (fewer when paced: see ``chunk_size``)."""


@dataclass
class Clients:
    """What a turn works with: where it publishes, its Kafka clients (made when the turn
    starts), the schema, its timeouts, and seams for tests."""

    topic: str
    producer: Callable[[], Producer]
    reader: Callable[[], Consumer]
    serde: OrderSerde
    dlq_topic: str | None = None
    """Where copies that fail again land: the run looks there from where it ended."""
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Any] | None = None
    wait: Callable[[float], Any] = time.sleep
    timeout_s: float = 60.0
    transaction_timeout_s: float = 60.0
    crash: Crash = field(default=lambda _point: None)
    make_lease: Callable[..., Lease] = Lease


@contextmanager
def holding(
    store: DlqStore,
    clients: Clients,
    result: ReplayResult,
    *,
    actor: str,
    wait_s: float,
    schema: OrderSchema,
) -> Iterator[Turn]:
    """A turn of ``result.replay_id``'s run: the lease taken (waiting up to ``wait_s`` for
    a run that holds it), earlier runs fenced and settled; released whatever happens.

    Raises:
        ReplayBusyError: another run held the replay for all of ``wait_s``.
        ReplayFencedError: a newer run took over; what this one left is that run's.
    """
    kafka = clients.producer()
    # One claimer per turn; the run id stays the lineage id.
    claimer = f"{result.replay_id[:40]}#{uuid.uuid4().hex[:12]}"
    lease = clients.make_lease(store.engine, replay_id=result.replay_id, claimer=claimer,
                               sleep=clients.wait)  # fmt: skip
    waited = lease.acquire(wait_s)
    result.waited_for = str(waited) if waited else result.waited_for
    turn = Turn(store, clients, lease, kafka, result, actor, schema)
    try:
        clients.crash("leased")
        turn.take_over()
        yield turn
    except ReplayFencedError as exc:
        left = turn.after_fence()
        raise ReplayFencedError(
            f"{exc} (it had published {len(result.delivered)} of the "
            f"{len(result.ids(PUBLISH))} rows it took; {left})"
        ) from exc
    finally:
        _let_go(store, lease)


def _let_go(store: DlqStore, lease: Lease) -> None:
    """Release the turn's claims (rows never committed; pending ones are the next turn's),
    then the lease, whatever happens to the first: a failure here is logged, never raised
    over the turn's own outcome, and the lease is let go in any case."""
    try:
        store.release(lease)
    except Exception as exc:  # the next turn frees them (release_ended); keep the real error
        log.warning("replay %s could not release its claims: %s", lease.replay_id, exc)
    finally:
        lease.release()


@dataclass
class Turn:
    """A run holding the lease: what it may do until the lease is released."""

    store: DlqStore
    clients: Clients
    lease: Lease
    kafka: Producer
    result: ReplayResult
    actor: str
    schema: OrderSchema
    pacer: Pacer | None = None
    """Spaces records across every ``publish`` of the turn (made by the first)."""

    def take_over(self) -> None:
        """Fence every earlier run in Kafka, settle the rows they left pending, free the
        rows they still claim."""
        c = self.clients
        fence(self.kafka, c.timeout_s)  # from here on no earlier run can commit anything
        c.crash("fenced")
        with closing(c.reader()) as consumer:
            self.result.recovered = resolve_pending(self.store, self.lease, consumer, c.topic,
                                                    actor=self.actor,
                                                    timeout_s=c.timeout_s)  # fmt: skip
        freed = self.store.release_ended(self.lease)  # every other claimer has ended
        if freed:
            log.info("replay %s freed %d rows an ended run still claimed",
                     self.lease.replay_id, freed)  # fmt: skip
        c.crash("resolved")

    def after_fence(self) -> str:
        """What a fenced turn leaves, and to whom.

        Fenced by a newer run (the lease is gone): that run settles everything. Fenced
        only in Kafka (someone else initialised the transactional id) while it still
        holds the lease: its transaction is decided now, committed or aborted, so it
        settles its own pending rows, and no row stays claimed by a turn that has ended.
        """
        if not self.lease.holds():
            return "the rest are left to the run that holds the replay"
        try:
            with closing(self.clients.reader()) as consumer:
                committed, aborted = resolve_pending(self.store, self.lease, consumer,
                                                     self.clients.topic, actor=self.actor,
                                                     timeout_s=self.clients.timeout_s)  # fmt: skip
        except OrderProcError as exc:
            return f"its pending rows stay for the next run to settle ({exc})"
        return f"it settled its pending rows: {committed} committed, {aborted} aborted"

    def begin(self, request: ReplayRequest) -> ReplayRun:
        """The run's record: made now, its selection frozen (the DLQ's ends noted first,
        where its copies' dead letters will be looked for), or as an earlier attempt of
        the run left it. It keeps the options and what was asked (``request.asked``:
        what "resume" asks again)."""
        run = self.store.run(self.lease.replay_id)
        if run is not None:
            return run
        ends = None
        if self.clients.dlq_topic:
            with closing(self.clients.reader()) as consumer:
                ends = dlq_ends(consumer, self.clients.dlq_topic, self.clients.timeout_s)
        options = request.model_dump(mode="json", include=set(ReplayOptions.model_fields))
        return self.store.begin_run(self.lease, request.selection, limit=request.max_messages,
                                    actor=self.actor, request={**options, **request.asked},
                                    dlq_positions=ends)  # fmt: skip

    def publish(self, limit: int, request: ReplayRequest) -> int:
        """Claim up to ``limit`` rows the run has not published yet, park or reject what
        must be, publish the rest (rate limited) in Kafka transactions; return how many rows
        it took (0: none left it could take). Stops at the first chunk that fails
        (``result.failed``)."""
        if limit <= 0:
            return 0
        c, result = self.clients, self.result
        approved = EventFilter(status=DlqStatus.APPROVED.value)
        claimed = self.store.claim(approved, lease=self.lease, limit=limit, queued=True)
        c.crash("claimed")
        planned = plan_rows(claimed, max_replays=request.max_replays, schema=self.schema)
        result.planned += planned
        for row in planned:
            if row.action == PARK:
                self.store.park([row.event_id], lease=self.lease, actor=self.actor,
                                note=row.note or "")  # fmt: skip
            elif row.action == REJECT:
                self.store.reject_claimed(row.event_id, lease=self.lease, actor=self.actor,
                                          note=row.note or "")  # fmt: skip
        if self.pacer is None:
            self.pacer = Pacer(request.rate_per_sec, clock=c.clock,
                               sleep=c.sleep or (lambda s: poll_for(self.kafka, s)))  # fmt: skip
        pacer = self.pacer
        chunk = chunk_size(request.rate_per_sec, c.transaction_timeout_s)
        by_id = {e.id: e for e in claimed}
        rows = [p for p in planned if p.action == PUBLISH]
        for start in range(0, len(rows), chunk):
            copies = [
                Copy(
                    row.event_id,
                    (by_id[row.event_id].message_key or row.order_id or "").encode() or None,
                    c.serde.serialize(row.payload or {}, value_context(c.topic)),
                    lineage_headers(by_id[row.event_id], result.replay_id),
                )
                for row in rows[start : start + chunk]
            ]
            done = publish_chunk(self.kafka, self.store, self.lease, c.topic, copies,
                                 actor=self.actor, pacer=pacer, timeout_s=c.timeout_s,
                                 crash=c.crash)  # fmt: skip
            result.delivered += done.delivered
            if done.failed:
                result.failed.update(done.failed)
                break
        return len(claimed)


def chunk_size(rate_per_sec: float, transaction_timeout_s: float) -> int:
    """Rows per transaction: a paced chunk must finish well inside the transaction timeout."""
    if rate_per_sec <= 0:
        return CHUNK
    return max(1, min(CHUNK, int(rate_per_sec * transaction_timeout_s / 2)))
