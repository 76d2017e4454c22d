"""The replay lease on each store: who a waiting run names, who is alive, and a holder
whose database session was ended while it lived."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from orderproc.dlq.lease import Lease, live_holder
from orderproc.errors import ReplayFencedError
from tests.support import end_lock_session

pytestmark = pytest.mark.integration


@pytest.fixture
def leases(engine: Engine) -> Iterator[list[Lease]]:
    made: list[Lease] = []
    yield made
    for lease in made:
        lease.release()


def lease_of(engine: Engine, leases: list[Lease], name: str, **kwargs: object) -> Lease:
    lease = Lease(engine, replay_id=name, claimer=f"{name}#1", **kwargs)  # type: ignore[arg-type]
    leases.append(lease)
    return lease


def test_a_waiting_run_names_the_run_that_holds_the_lock_not_the_last_one_recorded(
    engine: Engine, leases: list[Lease]
) -> None:
    old = lease_of(engine, leases, "run-old")
    old.acquire(0)
    old.release()  # the lease row still names run-old, now ended
    holder = lease_of(engine, leases, "run-a")
    assert holder._lock.try_acquire()  # run-a has the lock but has not written the row yet

    def wait(_seconds: float) -> None:
        if holder.epoch is None:
            holder.epoch = holder._take()  # ... now it has
        else:
            holder.release()  # and then it finishes

    waiting = lease_of(engine, leases, "run-b", sleep=wait)
    waited = waiting.acquire(30)

    assert waited is not None and waited.replay_id == "run-a"


def test_the_live_holder_is_the_claimer_while_its_run_lives_and_none_once_it_died(
    engine: Engine, leases: list[Lease]
) -> None:
    assert live_holder(engine) is None
    run = lease_of(engine, leases, "run-a")
    run.acquire(0)
    assert live_holder(engine) == "run-a#1"
    run.drop_lock()  # killed: the row still names it, the lock went with the process
    assert live_holder(engine) is None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite's lock is a file's
def test_a_holder_whose_session_was_ended_takes_the_lock_again_when_nobody_took_it(
    engine: Engine, leases: list[Lease]
) -> None:
    run = lease_of(engine, leases, "run-a")
    run.acquire(0)
    end_lock_session(engine)
    assert live_holder(engine) is None

    with run.transaction() as conn:  # its next write: the lock is taken again, epoch intact
        conn.execute(text("SELECT 1"))

    assert live_holder(engine) == "run-a#1"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_holder_whose_session_was_ended_and_whose_lock_was_taken_is_fenced(
    engine: Engine, leases: list[Lease]
) -> None:
    run = lease_of(engine, leases, "run-a")
    run.acquire(0)
    end_lock_session(engine)
    lease_of(engine, leases, "run-b").acquire(0)

    with (
        pytest.raises(ReplayFencedError, match="lost the replay lock to replay run-b"),
        run.transaction(),
    ):
        pass
