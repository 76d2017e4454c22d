"""Publishing replayed orders exactly once: Kafka transactions in chunks, each recorded in
the store before and after it commits, and the recovery of a run that died.

Every replay publishes under one transactional id (``Settings.replay_transactional_id``)
and only the run holding the replay lease publishes (``orderproc.dlq.lease``). Having
taken the lease, a run calls ``fence``: that fences every earlier run in Kafka (the
broker aborts their open transaction, so nothing they published but did not commit is
ever seen by a ``read_committed`` consumer). Per chunk (``publish_chunk``):

1. begin a transaction, produce the chunk, wait for every delivery report;
2. record in the store where each copy went (``replay_pending``);
3. commit the transaction;
4. mark the rows ``replayed``.

A run that dies between 2 and 4 leaves rows pending: ``resolve_pending`` (run by the
next run, after it fenced this one) reads each recorded coordinate with a
``read_committed`` consumer. A copy that is there was committed (the row becomes
``replayed``); one that is not was aborted (the row is free again). A run fenced while
alive stops at its next store write or Kafka call (``ReplayFencedError``) and the
run that fenced it settles what it left. So each approved row is published exactly
once, however the runs interleave, die and are rerun.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from orderproc import headers as h
from orderproc.clock import Pacer
from orderproc.dlq.claims import Delivered
from orderproc.dlq.lease import Lease
from orderproc.dlq.store import DlqStore
from orderproc.errors import DeliveryError, ReplayFencedError
from orderproc.headers import Header
from orderproc.kafka.clients import flush, produce
from orderproc.store.tables import DlqEvent

log = logging.getLogger(__name__)

Crash = Callable[[str], None]
"""A test seam: called at each named point of a run (``leased``, ``fenced``,
``resolved``, ``claimed``) and of each chunk (``produced``, ``acknowledged``,
``pending``, ``committed``, ``recorded``)."""

FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
"""Errors saying another producer took the replay's transactional id."""


@dataclass(frozen=True, slots=True)
class Copy:
    """One record a chunk publishes: which row it replays, and its bytes."""

    event_id: int
    key: bytes | None
    value: bytes
    headers: list[Header]


@dataclass
class Chunk:
    """What one chunk did: copies acknowledged, and why others were not."""

    delivered: list[Delivered]
    failed: dict[int, str]


def fence(producer: Producer, timeout_s: float) -> None:
    """Register the replay's transactional id: every earlier run is fenced in Kafka.

    The broker answers ``CONCURRENT_TRANSACTIONS`` (retriable) while it still completes
    an earlier transaction of the id (one just aborted or fenced): wait and ask again.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            producer.init_transactions(max(1.0, deadline - time.monotonic()))
            return
        except KafkaException as exc:
            err = exc.args[0]
            busy = err.retriable() or err.code() == KafkaError.CONCURRENT_TRANSACTIONS
            if not busy or time.monotonic() >= deadline:
                raise DeliveryError(f"cannot start the replay's transactions: {err.str()}") from exc
            time.sleep(0.2)


def publish_chunk(
    producer: Producer,
    store: DlqStore,
    lease: Lease,
    topic: str,
    copies: Sequence[Copy],
    *,
    actor: str,
    pacer: Pacer,
    timeout_s: float,
    crash: Crash,
) -> Chunk:
    """Steps 1 to 4 for one chunk, in one transaction. A chunk that fails is aborted and
    its rows stay replayable (``Chunk.failed`` says why).

    Raises:
        ReplayFencedError: a newer run took the lease or the transactional id; what
            this chunk left pending is settled by that run.
        DeliveryError: the producer failed for good (its rows stay replayable).
    """
    chunk = Chunk([], {})
    with _stopping(lease):
        producer.begin_transaction()
        for copy in copies:
            pacer.wait()
            produce(producer, topic, key=copy.key, value=copy.value, headers=copy.headers,
                    on_delivery=_reporter(copy.event_id, chunk))  # fmt: skip
        crash("produced")
        remaining = flush(producer, timeout_s)
    crash("acknowledged")
    ids = [c.event_id for c in copies]
    if chunk.failed or remaining:
        why = next(iter(chunk.failed.values()), f"no delivery report within {timeout_s:.0f}s")
        _abort(producer, lease, timeout_s)
        chunk.failed = {i: chunk.failed.get(i, f"aborted with its chunk: {why}") for i in ids}
        chunk.delivered = []
        return chunk
    problem = _commit(producer, store, lease, chunk.delivered, actor=actor, timeout_s=timeout_s,
                      crash=crash)  # fmt: skip
    if problem:
        chunk.failed, chunk.delivered = dict.fromkeys(ids, problem), []
    return chunk


def _commit(
    producer: Producer,
    store: DlqStore,
    lease: Lease,
    delivered: Sequence[Delivered],
    *,
    actor: str,
    timeout_s: float,
    crash: Crash,
) -> str | None:
    """Steps 2 to 4 for a chunk whose copies were all acknowledged; None, or why it failed
    (the transaction is then aborted and the rows free again)."""
    try:
        store.mark_pending(delivered, lease=lease)
    except ReplayFencedError:
        _abort(producer, lease, timeout_s)
        raise
    except Exception as exc:  # the claim was lost, or the store failed: nothing is committed
        _abort(producer, lease, timeout_s)
        return f"could not record the chunk before committing it: {exc}"
    crash("pending")
    deadline = time.monotonic() + timeout_s
    with _stopping(lease):
        while True:
            try:
                producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                break
            except KafkaException as exc:
                err = exc.args[0]
                if err.txn_requires_abort():
                    _abort(producer, lease, timeout_s)
                    ids = [d.event_id for d in delivered]
                    store.clear_pending(ids, lease=lease, actor=actor,
                                        note=f"transaction aborted: {err.str()}")  # fmt: skip
                    return f"transaction aborted: {err.str()}"
                if not err.retriable() or time.monotonic() >= deadline:
                    raise  # the outcome is unknown: the rows stay pending for the next run
    crash("committed")
    store.mark_replayed(delivered, lease=lease, actor=actor)
    crash("recorded")
    return None


@contextmanager
def _stopping(lease: Lease) -> Iterator[None]:
    """Turn the Kafka errors that end a run into one-line errors: fenced (by a newer run,
    or anyone using the replay's transactional id) or failed for good."""
    try:
        yield
    except KafkaException as exc:
        err: KafkaError = exc.args[0]
        if err.code() in FENCED:
            raise ReplayFencedError(
                f"replay {lease.replay_id} was fenced in Kafka by a newer producer of its "
                f"transactional id (the store's replay lease names {lease.holder()}): {err.str()}"
            ) from exc
        raise DeliveryError(f"replay {lease.replay_id}: the producer failed: {err.str()}") from exc


def _abort(producer: Producer, lease: Lease, timeout_s: float) -> None:
    with _stopping(lease):
        producer.abort_transaction(timeout_s)


def _reporter(event_id: int, chunk: Chunk) -> Callable[[KafkaError | None, Message], None]:
    # Delivery callbacks run inside flush() on this thread: no lock needed.
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            chunk.failed[event_id] = err.str()
            return
        chunk.delivered.append(
            Delivered(event_id, msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        )

    return on_delivery


def resolve_pending(
    store: DlqStore, lease: Lease, reader: Consumer, topic: str, *, actor: str, timeout_s: float
) -> tuple[int, int]:
    """Settle every row an earlier run left pending; return (committed, aborted).

    Call it only after ``fence``: then no pending transaction can still commit.

    Raises:
        DeliveryError: the outcome of some copy could not be read within ``timeout_s``.
    """
    pending = store.pending()
    if not pending:
        return 0, 0
    by_partition: dict[int, list[DlqEvent]] = defaultdict(list)
    for event in pending:
        if event.replay_partition is not None and event.replay_offset is not None:
            by_partition[event.replay_partition].append(event)
    committed: list[Delivered] = []
    for partition, events in by_partition.items():
        found = _committed_copies(reader, topic, partition, events, timeout_s)
        for e in events:
            offset = e.replay_offset or 0
            if found.get(offset) == _lineage(e):  # the committed copy at its offset is this row's
                committed.append(Delivered(e.id, topic, partition, offset))
    store.mark_replayed(committed, lease=lease, actor=actor)
    aborted = [e.id for e in pending if e.id not in {d.event_id for d in committed}]
    store.clear_pending(aborted, lease=lease, actor=actor,
                        note="its transaction was aborted (its replay run ended)")  # fmt: skip
    log.info("replay recovery: %d committed, %d aborted", len(committed), len(aborted))
    return len(committed), len(aborted)


def _lineage(event: DlqEvent) -> tuple[str, str, str]:
    return (event.dlq_topic, str(event.dlq_partition), str(event.dlq_offset))


def _committed_copies(
    reader: Consumer, topic: str, partition: int, events: Sequence[DlqEvent], timeout_s: float
) -> dict[int, tuple[str | None, str | None, str | None]]:
    """Offset -> lineage of the committed records at the pending rows' offsets."""
    wanted = {e.replay_offset for e in events if e.replay_offset is not None}
    start = TopicPartition(topic, partition, min(wanted))
    reader.assign([start])
    found: dict[int, tuple[str | None, str | None, str | None]] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in reader.consume(500, timeout=1.0):
            done = _end_reached(msg, wanted, found)
            if done is True:
                return found
            if done is None:  # the end, but the last stable offset is not past them yet
                time.sleep(0.2)
                reader.seek(start)
    raise DeliveryError(
        f"could not read the outcome of {len(wanted)} replayed copies in {topic}[{partition}] "
        f"within {timeout_s:.0f}s; they stay pending for the next replay"
    )


def _end_reached(msg: Message, wanted: set[int], found: dict[int, Any]) -> bool | None:
    """True when every wanted offset is decided; None at an end that is not past them."""
    err = msg.error()
    if err is not None:
        if err.code() != KafkaError._PARTITION_EOF:
            return False
        # read_committed: the end is the last stable offset, past every decided transaction.
        return True if (msg.offset() or 0) > max(wanted) else None
    offset = msg.offset() or 0
    if offset in wanted:
        headers = h.read(msg)[0]
        found[offset] = tuple(
            h.text(headers, name)
            for name in (h.REPLAY_DLQ_TOPIC, h.REPLAY_DLQ_PARTITION, h.REPLAY_DLQ_OFFSET)
        )
    return offset >= max(wanted)
