"""A replay that watches itself: a canary, the live consumer's verdict on it, then the
rest in steps, paused when replayed orders fail again.

A run is a sequence of turns of the replay lease (``orderproc.dlq.turn``) with waits
between them that hold nothing: not the lease, not a claim, not a worker slot (in
Airflow the wait is a deferred task; on the command line a sleep between looks):

1. ``start``: record the run, freeze its selection, publish the canary; then the run
   *reserves* the rest (no other run takes it) while the canary is awaited;
2. the wait: ``look_while_waiting`` until the verdict is in (``orderproc.dlq.verdict``),
   then ``act_on`` it: a pause is a turn that returns the rows not published to
   ``approved`` (an audit row each, saying why); otherwise the run goes on;
3. ``carry_on``: one turn publishes the rest in steps of ``step_rows``, looking at the
   outcomes between steps, and pauses the same way when they are bad;
4. the last wait (only when the run has a canary): every copy decided, or the timeout,
   and ``act_on`` finishes the run with its verdict.

Nothing is published twice and nothing is lost whichever turn dies: every turn settles
what an earlier one left pending before it claims anything, a pause or a stop returns
the queued rows, and a run that died between turns stops reserving its rows once
``reserved_until`` passes (the next run then marks it ``stopped``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from orderproc.clock import utcnow
from orderproc.dlq.outcomes import look
from orderproc.dlq.replay import ReplayRequest, ReplayResult, raise_if_failed, run_replay
from orderproc.dlq.runs import RunState
from orderproc.dlq.store import DlqStore
from orderproc.dlq.turn import Clients, Turn, holding
from orderproc.dlq.verdict import (
    Call,
    Verdict,
    between_steps,
    on_wait,
    phase_of,
    poll_interval,
)
from orderproc.models import DEFAULT_REPLAY_WAIT_S, ReplayOptions
from orderproc.serde import value_context
from orderproc.store.tables import ReplayRun

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=10)
"""A waiting run reserves its rows for its outcome timeout and this much more: the time
its next task may take to be scheduled and started."""


def start(
    store: DlqStore, request: ReplayRequest, clients: Clients, *, replay_id: str, actor: str
) -> ReplayResult:
    """The first turn: record the run (its selection frozen) and publish its canary.

    A dry run plans and changes nothing (``run_replay``'s). An attempt of a run that
    exists already (an Airflow retry) publishes what is left of its canary.

    Raises:
        ReplayBusyError, ReplayFencedError, DeliveryError: as ``run_replay``.
    """
    if request.dry_run:
        return run_replay(store, request, topic=clients.topic, producer=clients.producer,
                          reader=clients.reader, replay_id=replay_id, serde=clients.serde,
                          timeout_s=clients.timeout_s)  # fmt: skip

    def canary(turn: Turn, run: ReplayRun) -> None:
        size = run.canary
        if run.steps == 0 and size == 0:
            size = request.canary_rows(store.queued(replay_id))
            store.update_run(turn.lease, canary=size)
        published = store.tally(replay_id).published
        turn.publish(size - published, request)
        if not turn.result.failed:  # the rest is a later turn's: the run stays alive till then
            _wait_next(store, turn, request, outcomes=bool(size))

    return _turn(store, clients, replay_id, actor, canary, request=request)


def carry_on(store: DlqStore, clients: Clients, *, replay_id: str, actor: str) -> ReplayResult:
    """The turn after the canary: publish the rest in steps, looking at the outcomes
    between two steps; pause when the verdict is bad. A run with a canary then waits
    for the outcomes of the last steps; one without finishes now."""

    def steps(turn: Turn, run: ReplayRun) -> None:
        request = _request(run)
        done = run.steps
        while store.queued(replay_id):
            took = turn.publish(request.step_rows, request)
            if not took:  # what is left cannot be taken now (locked by a reviewer, changed)
                store.give_back(turn.lease, "the run could not take it", actor=turn.actor)
                break
            done += 1
            store.update_run(turn.lease, steps=done)
            if turn.result.failed or not store.queued(replay_id):
                break
            tally = look(store, replay_id, reader=turn.clients.reader,
                         dlq_topic=turn.clients.dlq_topic)  # fmt: skip
            verdict = between_steps(tally, request, now=utcnow(),
                                    phase=phase_of(done, run.canary))  # fmt: skip
            if verdict.call is Call.PAUSE:
                _end(store, turn, RunState.PAUSED, verdict)
                return
        if turn.result.failed:
            return
        if run.canary:
            _wait_next(store, turn, request)
            return
        tally = look(store, replay_id, reader=turn.clients.reader,
                     dlq_topic=turn.clients.dlq_topic)  # fmt: skip
        said = f"finished: published {tally.published}; outcomes looked at later"
        _end(store, turn, RunState.FINISHED, Verdict(Call.GO, said))

    return _turn(store, clients, replay_id, actor, steps)


def look_while_waiting(
    store: DlqStore, clients: Clients, *, replay_id: str, now: datetime | None = None
) -> Verdict:
    """One look while the run waits (for its canary, or at the end): decide what can be
    decided, and say whether to wait on, go on or pause. Holds no lock."""
    run = store.run(replay_id)
    if run is None or run.state != RunState.RUNNING:
        said = run.said if run is not None else f"replay {replay_id} did not publish"
        return Verdict(Call.GO, said or "")
    tally = look(store, replay_id, reader=clients.reader, dlq_topic=clients.dlq_topic,
                 timeout_s=clients.timeout_s)  # fmt: skip
    end = store.queued(replay_id) == 0
    since = run.waiting_since or run.updated_at
    return on_wait(tally, _request(run), waiting_since=since, now=now or utcnow(),
                   phase=phase_of(run.steps, run.canary, end=end))  # fmt: skip


def act_on(
    store: DlqStore, clients: Clients, verdict: Verdict, *, replay_id: str, actor: str
) -> ReplayResult | None:
    """After a wait: pause on a bad verdict (a turn returns the queued rows), finish at
    the end with the verdict, else nothing (the next turn goes on). None: nothing to do."""
    run = store.run(replay_id)
    if run is None or run.state != RunState.RUNNING or verdict.call is Call.WAIT:
        return None
    end = store.queued(replay_id) == 0
    if not end and verdict.call is Call.GO:
        return None
    state = RunState.FINISHED if end else RunState.PAUSED
    return _turn(store, clients, replay_id, actor, lambda t, _r: _end(store, t, state, verdict))


def stop(
    store: DlqStore, clients: Clients, why: str, *, replay_id: str, actor: str
) -> ReplayResult | None:
    """End a run that could not finish (a task failed for good): its queued rows go back
    to approved. None when the run had ended anyway."""
    run = store.run(replay_id)
    if run is None or run.state != RunState.RUNNING:
        return None
    verdict = Verdict(Call.PAUSE, f"stopped: {why}", bad=True)
    return _turn(store, clients, replay_id, actor,
                 lambda t, _r: _end(store, t, RunState.STOPPED, verdict))  # fmt: skip


def _turn(
    store: DlqStore,
    clients: Clients,
    replay_id: str,
    actor: str,
    work: Callable[[Turn, ReplayRun], None],
    *,
    request: ReplayRequest | None = None,
) -> ReplayResult:
    """A turn of the run doing ``work``, unless the run has ended meanwhile."""
    result = ReplayResult(replay_id=replay_id, topic=clients.topic, dry_run=False)
    schema = clients.serde.writer_schema_within(clients.timeout_s, value_context(clients.topic))
    result.schema = schema.describe()
    wait_s = request.wait_s if request is not None else DEFAULT_REPLAY_WAIT_S
    with holding(store, clients, result, actor=actor, wait_s=wait_s, schema=schema) as turn:
        run = turn.begin(request) if request is not None else store.run(replay_id)
        if run is not None and run.state == RunState.RUNNING:
            work(turn, run)
            if turn.result.failed:
                why = f"{len(turn.result.failed)} records were not published"
                _end(store, turn, RunState.STOPPED, Verdict(Call.PAUSE, f"stopped: {why}", True))
    log.info("replay %s: %s", replay_id, result.counts())
    raise_if_failed(result)
    return result


def _end(store: DlqStore, turn: Turn, state: RunState, verdict: Verdict) -> None:
    back = store.end_run(turn.lease, state, said=verdict.said, failed=verdict.bad,
                         actor=turn.actor)  # fmt: skip
    level = logging.WARNING if verdict.bad else logging.INFO
    log.log(level, "replay %s %s (%d rows returned to approved)", turn.lease.replay_id,
            verdict.said, back)  # fmt: skip


def _wait_next(
    store: DlqStore, turn: Turn, options: ReplayOptions, *, outcomes: bool = True
) -> None:
    """The run waits for its next turn now, holding nothing (for its canary's
    ``outcomes``, or, without a canary, only for the task that publishes the rest): until
    ``reserved_until`` it counts as alive (another run does not mark it stopped) and its
    queued rows, if any, are reserved for it."""
    now = utcnow()
    until = now + timedelta(seconds=options.outcome_timeout_s) + GRACE
    if outcomes:
        store.update_run(turn.lease, waiting_since=now, reserved_until=until)
    else:
        store.update_run(turn.lease, reserved_until=until)


def _request(run: ReplayRun) -> ReplayRequest:
    """The options the run was asked with (its selection is frozen in the store)."""
    return ReplayRequest(**ReplayOptions.model_validate(run.request).model_dump())


def replay_watched(
    store: DlqStore,
    request: ReplayRequest,
    clients: Clients,
    *,
    replay_id: str,
    actor: str,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], datetime] = utcnow,
) -> ReplayResult:
    """A whole watched run in this process (``orderproc dlq replay``): the canary, the
    wait for its verdict, the steps, the last wait; the waits sleep between looks and
    hold nothing (``sleep`` between looks, the timeout on ``clock``). Returns what its
    turns did (the run's record says the rest).

    Raises:
        ReplayBusyError, ReplayFencedError, DeliveryError: as ``run_replay``.
    """
    result = start(store, request, clients, replay_id=replay_id, actor=actor)
    if request.dry_run:
        return result
    for last in (False, True):  # the canary's wait, then the last one
        verdict = wait_for_verdict(store, clients, replay_id=replay_id, options=request,
                                   sleep=sleep, clock=clock)  # fmt: skip
        act_on(store, clients, verdict, replay_id=replay_id, actor=actor)
        run = store.run(replay_id)
        if last or run is None or run.state != RunState.RUNNING:
            return result
        more = carry_on(store, clients, replay_id=replay_id, actor=actor)
        result.planned += more.planned
        result.delivered += more.delivered
    return result


def wait_for_verdict(
    store: DlqStore,
    clients: Clients,
    *,
    replay_id: str,
    options: ReplayOptions,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], datetime] = utcnow,
) -> Verdict:
    """Look until the verdict is in (the run's outcome timeout, on ``clock``, bounds it)."""
    while True:
        verdict = look_while_waiting(store, clients, replay_id=replay_id, now=clock())
        if verdict.call is not Call.WAIT:
            return verdict
        log.info("replay %s %s", replay_id, verdict.said)
        sleep(poll_interval(options))
