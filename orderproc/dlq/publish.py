"""Publishing replayed orders exactly once: Kafka transactions in chunks, each recorded in
the store before and after it commits, and the recovery of a replay that died.

One replay runs at a time under one transactional id (``Settings.replay_transactional_id``).
``fence`` registers it, which fences every earlier replay: the broker aborts their open
transaction, so nothing they published but did not commit is ever seen by a
``read_committed`` consumer. Per chunk:

1. begin a transaction, produce the chunk, wait for every delivery report;
2. record in the store where each copy went (``replay_pending``);
3. commit the transaction;
4. mark the rows ``replayed``.

A crash between 2 and 4 leaves rows pending: ``resolve_pending`` (run by the next
replay, after it fenced this one) reads each recorded coordinate with a
``read_committed`` consumer. A copy that is there was committed (the row becomes
``replayed``); one that is not was aborted (the row is free again). So each approved
row is published exactly once, however the runs die and are rerun.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from orderproc import headers as h
from orderproc.dlq.claims import Delivered
from orderproc.dlq.store import DlqStore
from orderproc.errors import DeliveryError
from orderproc.store.tables import DlqEvent

log = logging.getLogger(__name__)

Crash = Callable[[str], None]
"""A test seam: called at each named point of a chunk (``produced``, ``acknowledged``,
``pending``, ``committed``, ``recorded``)."""


def fence(producer: Producer, timeout_s: float) -> None:
    """Register the replay's transactional id: every earlier replay is fenced.

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


def commit_chunk(
    producer: Producer,
    store: DlqStore,
    delivered: Sequence[Delivered],
    *,
    claimer: str,
    replay_id: str,
    actor: str,
    timeout_s: float,
    crash: Crash,
) -> str | None:
    """Steps 2 to 4 for a chunk whose copies were all acknowledged; None, or why it failed
    (the transaction is then aborted and the rows free again)."""
    ids = [d.event_id for d in delivered]
    try:
        store.mark_pending(delivered, claimer=claimer, replay_id=replay_id)
    except Exception as exc:  # the claim was lost, or the store failed: nothing is committed
        producer.abort_transaction(timeout_s)
        return f"could not record the chunk before committing it: {exc}"
    crash("pending")
    try:
        producer.commit_transaction(timeout_s)
    except KafkaException as exc:
        err = exc.args[0]
        if err.txn_requires_abort():
            producer.abort_transaction(timeout_s)
        elif not err.retriable():
            # Fenced (another replay started): it resolves these pending rows itself.
            raise DeliveryError(f"replay transaction failed: {err.str()}") from exc
        store.clear_pending(ids, actor=actor, note=f"transaction aborted: {err.str()}")
        return f"transaction aborted: {err.str()}"
    crash("committed")
    store.mark_replayed(delivered, actor=actor)
    crash("recorded")
    return None


def resolve_pending(
    store: DlqStore, reader: Consumer, topic: str, *, actor: str, timeout_s: float
) -> tuple[int, int]:
    """Settle every row a dead replay left pending; return (committed, aborted).

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
    store.mark_replayed(committed, actor=actor)
    aborted = [e.id for e in pending if e.id not in {d.event_id for d in committed}]
    store.clear_pending(aborted, actor=actor, note="its transaction was aborted (replay died)")
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
