"""Brokers that do not acknowledge: say once that the consumer waits, and once that it goes on.

A broker down, or a partition with fewer in-sync replicas than ``min.insync.replicas``
(two brokers of three lost), means the consumer's retry/DLQ records are not acknowledged
and its offset commits fail. Nothing is lost meanwhile: offsets move only past durable
batches (``orderproc.worker.offsets``), so the consumer holds them and, once four batches
wait, stops reading until the brokers answer (librdkafka resends by itself). What the
operator needs is to know it waits, without a line per retry: after
``NOTICE_AFTER_S`` of it the consumer logs one warning naming what waits, and one line
when the brokers answer again. The brokers answer again once they have answered for
``NOTICE_AFTER_S``: the records acknowledged, then a group coordinator still loading its
offsets after the same outage refuses commits for a while, is still one wait (one line
each way), however the outage's parts take turns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

NOTICE_AFTER_S = 10.0
"""Longer than a leader election after a controlled shutdown (a second or two), so a
rolling restart stays quiet; a crashed broker takes its session timeout (9 s) to be
noticed by the controller, and the wait it causes is worth a line."""


_ANSWERS = frozenset(
    {
        KafkaError._NO_OFFSET,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
"""Commit errors that come from a coordinator that answers: the group's business, handled by
the rebalance (offsets of revoked partitions are the next owner's), not a broker to wait for."""


class BrokerWait:
    """Tracks unacknowledged records and failing commits; logs the wait and its end once."""

    def __init__(
        self, notice_after_s: float = NOTICE_AFTER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.notice_after_s = notice_after_s
        self._clock = clock
        self._commits_failing_since: float | None = None
        self._commit_error = ""
        self._since: float | None = None
        """When the wait that was announced began (None: no wait announced)."""
        self._answered_at: float | None = None
        """During an announced wait: since when nothing waits (None: something does)."""

    @property
    def waiting(self) -> bool:
        """True between the warning and the line saying the brokers answer again."""
        return self._since is not None

    def committed(self, err: KafkaError | None, _partitions: object = None) -> None:
        """An offset commit's outcome (the consumer's ``on_commit``). Nothing to commit, or a
        refusal that only says the group moved on (a rebalance), is an answer."""
        if err is None or err.code() in _ANSWERS:
            self._commits_failing_since = None
            return
        self._commit_error = err.str()
        if self._commits_failing_since is None:
            self._commits_failing_since = self._clock()

    def check(self, unacknowledged: int, oldest_since: float | None) -> None:
        """Called on every turn of the loop and while it waits for acknowledgements:
        ``unacknowledged`` routed records, the oldest batch waiting for them since
        ``oldest_since`` (a ``clock`` time; None when no batch waits)."""
        now = self._clock()
        acks_late = oldest_since is not None and now - oldest_since >= self.notice_after_s
        commits = self._commits_failing_since
        commits_late = commits is not None and now - commits >= self.notice_after_s
        if self._since is None and (acks_late or commits_late):
            what, began = [], []
            if acks_late and oldest_since is not None:
                what.append(f"{unacknowledged} retry/DLQ records unacknowledged")
                began.append(oldest_since)
            if commits_late and commits is not None:
                what.append(f"offset commits failing ({self._commit_error})")
                began.append(commits)
            self._since = min(began)
            log.warning(
                "waiting for the brokers: %s for %.0f s (a broker down, or fewer in-sync "
                "replicas than min.insync.replicas); offsets held, nothing is skipped",
                " and ".join(what),
                now - self._since,
            )
        elif self._since is not None:
            self._announced_wait_goes_on(now, answering=oldest_since is None and commits is None)

    def finish(self) -> None:
        """The consumer stops: brokers that answer since the wait was told are said to, even
        before they have answered for ``notice_after_s``."""
        if self._since is not None and self._answered_at is not None:
            self._answered_again(self._since, self._answered_at)

    def _announced_wait_goes_on(self, now: float, *, answering: bool) -> None:
        if not answering:
            self._answered_at = None  # one more part of the same outage
        elif self._answered_at is None:
            self._answered_at = now
        elif self._since is not None and now - self._answered_at >= self.notice_after_s:
            self._answered_again(self._since, self._answered_at)

    def _answered_again(self, since: float, answered_at: float) -> None:
        """The announced wait is over: say so once, and forget it."""
        log.warning("the brokers answer again after %.1f s; consuming", answered_at - since)
        self._since = self._answered_at = None
