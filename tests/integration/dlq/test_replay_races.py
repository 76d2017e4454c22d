"""Replays racing each other, each interleaving forced at a named step (no sleeps that
hope the scheduler produces it), on PostgreSQL and SQLite, against the real broker.

A run stops at a point of ``orderproc.dlq.publish.Crash`` (``leased``, ``fenced``,
``resolved``, ``claimed``, then per chunk ``produced``, ``acknowledged``, ``pending``,
``committed``, ``recorded``) until the test lets it go. Whatever the interleaving,
every approved row is published once (read back ``read_committed`` by its lineage),
ends ``replayed`` with nothing claimed or pending, and the lease is free.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from sqlalchemy import Engine, select

from orderproc.config import Settings
from orderproc.dlq.filters import EventFilter
from orderproc.dlq.lease import Lease
from orderproc.dlq.replay import ReplayRequest, ReplayResult, run_replay
from orderproc.dlq.store import DlqStore
from orderproc.errors import ReplayBusyError, ReplayFencedError, ReviewError
from orderproc.kafka.clients import replay_producer_config, replay_reader_config
from orderproc.store.tables import ReplayLease
from tests.support import end_lock_session

pytestmark = pytest.mark.integration

Helper = Callable[..., Any]
ROWS = 20  # two chunks of ten (see ``paced``)


class Pause:
    """A crash seam that holds its run at ``point`` (its ``nth`` time) until ``go``."""

    def __init__(self, point: str | None = None, nth: int = 1) -> None:
        self.point, self.nth = point, nth
        self.seen: Counter[str] = Counter()
        self.reached, self.go = threading.Event(), threading.Event()

    def __call__(self, at: str) -> None:
        self.seen[at] += 1
        if at == self.point and self.seen[at] == self.nth:
            self.reached.set()
            assert self.go.wait(120), f"the run held at {at} was never let go"


class Run(threading.Thread):
    """A replay on a thread of its own; ``outcome()`` is its result or its error."""

    def __init__(self, work: Callable[[], ReplayResult]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: ReplayResult | BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:
            self.result = exc

    def outcome(self) -> ReplayResult | BaseException:
        self.join(180)
        assert not self.is_alive(), "the run did not finish"
        assert self.result is not None
        return self.result


class FakeTime:
    """A clock and a sleep for the pacer: paced chunks without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def store(engine: Engine) -> DlqStore:
    return DlqStore(engine)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    return make_settings(partitions=2, database_url=db_url, max_attempts=1)


@pytest.fixture
def approved(store: DlqStore, seed_dlq: Helper, make_orders: Helper) -> list[int]:
    ids: list[int] = seed_dlq(store, make_orders(ROWS))
    store.approve(ids, actor="alice")
    return ids


@pytest.fixture
def replay(store: DlqStore, settings: Settings) -> Callable[..., ReplayResult]:
    """A replay of every approved row, paced on a fake clock into chunks of ten."""

    def run(replay_id: str, **kwargs: Any) -> ReplayResult:
        request = kwargs.pop("request", ReplayRequest(max_messages=100, rate_per_sec=10))
        fake = FakeTime()
        return run_replay(
            store,
            request,
            topic=settings.orders_topic,
            producer=lambda: Producer(replay_producer_config(settings)),
            reader=lambda: Consumer(replay_reader_config(settings)),
            replay_id=replay_id,
            clock=fake.clock,
            sleep=fake.sleep,
            transaction_timeout_s=2.0,  # 10 records/s * 2 s / 2: chunks of ten
            **kwargs,
        )

    return run


@pytest.fixture
def reconcile(
    store: DlqStore, settings: Settings, read_all: Helper, headers_of: Helper, dlq_rows: Helper
) -> Callable[[list[int]], None]:
    """Every row published once and recorded so; nothing claimed, pending or leased."""

    def check(ids: list[int]) -> None:
        copies = read_all(settings.orders_topic)
        lineage = Counter(headers_of(m)["replay.dlq.offset"] for m in copies)
        rows = dlq_rows(store)
        assert set(lineage) == {str(rows[i].dlq_offset) for i in ids}  # every row ...
        assert set(lineage.values()) == {1}  # ... once
        assert {(rows[i].status, rows[i].replay_count, rows[i].replay_pending,
                 rows[i].claimed_by) for i in ids} == {("replayed", 1, False, None)}  # fmt: skip
        where = {(m.partition(), m.offset()) for m in copies}
        assert {(rows[i].replay_partition, rows[i].replay_offset) for i in ids} == where
        with store.engine.connect() as conn:
            assert conn.scalar(select(ReplayLease.holder)) is None

    return check


@pytest.fixture
def hold(replay: Callable[..., ReplayResult]) -> Callable[..., tuple[Run, Pause]]:
    """``hold(name, point, **kwargs)``: a replay started on its own thread, held at ``point``."""

    def start(name: str, point: str, **kwargs: Any) -> tuple[Run, Pause]:
        held = Pause(point)
        run = Run(lambda: replay(name, crash=held, **kwargs))
        run.start()
        assert held.reached.wait(60), f"{name} never reached {point}"
        return run, held

    return start


def leases_into(found: dict[str, Lease], name: str) -> Callable[..., Lease]:
    def make(*args: Any, **kwargs: Any) -> Lease:
        found[name] = Lease(*args, **kwargs)
        return found[name]

    return make


# -- a run that holds the replay makes the next one wait --------------------------------------

RUN_POINTS = ["leased", "fenced", "resolved", "claimed"]
CHUNK_POINTS = ["produced", "acknowledged", "pending", "committed", "recorded"]


@pytest.mark.parametrize("point", RUN_POINTS + CHUNK_POINTS)
def test_a_run_started_while_another_holds_the_replay_waits_then_takes_only_what_is_left(
    point: str,
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    reconcile: Callable[[list[int]], None],
) -> None:
    first, held = hold("run-a", point)
    waiting = threading.Event()

    def look_again(_seconds: float) -> None:
        waiting.set()
        time.sleep(0.05)

    by_id = ReplayRequest(selection=EventFilter(status="approved", ids=tuple(approved)))
    second = Run(lambda: replay("run-b", wait=look_again, request=by_id))
    second.start()
    assert waiting.wait(60)  # the second run is waiting for the lease, having touched nothing
    held.go.set()
    a, b = first.outcome(), second.outcome()

    assert isinstance(a, ReplayResult) and len(a.delivered) == ROWS
    assert isinstance(b, ReplayResult) and b.planned == [] and b.delivered == []
    assert b.waited_for is not None and b.waited_for.startswith("replay run-a")
    assert set(b.not_taken) == set(approved)
    assert all(why.startswith("already replayed by run-a") for why in b.not_taken.values())
    reconcile(approved)


def test_a_run_that_waits_too_long_gives_up_naming_the_holder_and_changes_nothing(
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    dlq_rows: Helper,
    store: DlqStore,
    reconcile: Callable[[list[int]], None],
) -> None:
    first, held = hold("run-a", "claimed")
    before = {i: (e.status, e.claimed_by, e.version) for i, e in dlq_rows(store).items()}

    with pytest.raises(ReplayBusyError) as busy:
        replay("run-b", request=ReplayRequest(wait_s=0))

    message = str(busy.value)
    assert message.startswith("replay run-a") and "holds the replay" in message
    assert "replay run-b waited 0s for it and changed nothing" in message and "\n" not in message
    assert {i: (e.status, e.claimed_by, e.version) for i, e in dlq_rows(store).items()} == before
    held.go.set()
    assert isinstance(first.outcome(), ReplayResult)
    reconcile(approved)


def test_a_reviewer_cannot_change_a_row_a_running_replay_holds_and_is_told_by_whom(
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    store: DlqStore,
    reconcile: Callable[[list[int]], None],
) -> None:
    first, held = hold("run-a", "claimed")

    with pytest.raises(ReviewError, match=r"is being replayed right now \(claimed by run-a#"):
        store.edit(approved[0], {"price": 1.0}, actor="alice")

    held.go.set()
    assert isinstance(first.outcome(), ReplayResult)
    reconcile(approved)


def test_two_runs_started_at_the_same_instant_take_turns_and_publish_each_row_once(
    replay: Callable[..., ReplayResult],
    approved: list[int],
    reconcile: Callable[[list[int]], None],
) -> None:
    start = threading.Barrier(2)

    def run(name: str) -> ReplayResult:
        start.wait()
        return replay(name)

    runs = [Run(functools.partial(run, name)) for name in ("run-a", "run-b")]
    for r in runs:
        r.start()
    results = [r.outcome() for r in runs]

    assert all(isinstance(r, ReplayResult) for r in results)  # no run fails, none is fenced
    done = [r for r in results if isinstance(r, ReplayResult)]
    assert sorted(len(r.delivered) for r in done) == [0, ROWS]
    later = next(r for r in done if not r.delivered)
    assert later.waited_for is not None  # the later one waited for the other, then found none
    reconcile(approved)


# -- a run that lost the lock while alive is fenced ----------------------------------------------


@pytest.mark.parametrize("taker_at", RUN_POINTS)
@pytest.mark.parametrize("fenced_at", ["claimed", *CHUNK_POINTS])
def test_a_run_that_lost_the_lock_is_fenced_wherever_it_stood_and_no_row_is_published_twice(
    fenced_at: str,
    taker_at: str,
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    reconcile: Callable[[list[int]], None],
) -> None:
    leases: dict[str, Lease] = {}
    first, old = hold("run-a", fenced_at, make_lease=leases_into(leases, "a"))
    leases["a"].drop_lock()  # its connection was cut: it lives on without the lock
    second, new = hold("run-b", taker_at)
    old.go.set()  # the old run goes on while the new one stands at its step
    a = first.outcome()
    new.go.set()
    b = second.outcome()

    assert isinstance(a, ReplayFencedError), a
    assert "run-b" in str(a) and "\n" not in str(a)
    assert isinstance(b, ReplayResult)
    reconcile(approved)


def test_a_run_fenced_in_kafka_by_another_producer_stops_in_one_line_and_a_rerun_publishes_once(
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    settings: Settings,
    dlq_rows: Helper,
    store: DlqStore,
    reconcile: Callable[[list[int]], None],
) -> None:
    # The original failure: a fenced producer's flush died with a raw KafkaException and a
    # SystemError from confluent-kafka, leaving its rows claimed.
    first, held = hold("run-a", "produced")
    Producer(replay_producer_config(settings)).init_transactions(30)  # takes the id
    held.go.set()
    a = first.outcome()

    assert isinstance(a, ReplayFencedError), a
    assert "fenced in Kafka" in str(a) and "\n" not in str(a)
    rows = dlq_rows(store)
    assert {(rows[i].status, rows[i].claimed_by, rows[i].replay_pending) for i in approved} == {
        ("approved", None, False)
    }
    again = replay("run-c")
    assert len(again.delivered) == ROWS
    reconcile(approved)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite's lock is a file's
def test_a_run_whose_database_session_the_server_ended_is_fenced_by_the_next_run(
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    engine: Engine,
    reconcile: Callable[[list[int]], None],
) -> None:
    first, held = hold("run-a", "pending")
    end_lock_session(engine)  # an administrator (or a network cut) ends its lock session
    second = replay("run-b")  # takes the lease at once, fences run-a, settles its pending chunk
    held.go.set()
    a = first.outcome()

    assert isinstance(a, ReplayFencedError) and "run-b" in str(a)
    assert second.recovered[1] == 10  # the held chunk's transaction was aborted by the fence
    reconcile(approved)


# -- a stranger's client: the command line --------------------------------------------------------


def test_the_command_line_waits_for_a_running_replay_and_says_so(
    replay: Callable[..., ReplayResult],
    hold: Callable[..., tuple[Run, Pause]],
    approved: list[int],
    settings: Settings,
    settings_env: Callable[[Settings], dict[str, str]],
    reconcile: Callable[[list[int]], None],
) -> None:
    first, held = hold("run-a", "produced")
    cli = subprocess.Popen(
        [sys.executable, "-m", "orderproc", "dlq", "replay", "--publish", "--wait", "120",
         "--replay-id", "run-cli"],
        env=settings_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert cli.stderr is not None
        said = _line_with(cli.stderr, "replay run-cli waits")
        assert "replay run-cli waits (up to 120s) for replay run-a" in said
        held.go.set()
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err[-2000:]
    assert "waited for replay run-a" in out and "took 0 row(s), published 0" in out
    assert isinstance(first.outcome(), ReplayResult)
    reconcile(approved)


def _line_with(stream: Any, needle: str) -> str:
    for line in _lines(stream):
        if needle in line:
            return str(line)
    raise AssertionError(f"the command never said {needle!r}")


def _lines(stream: Any) -> Iterator[str]:
    yield from iter(stream.readline, "")
