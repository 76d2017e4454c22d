"""One replay run at a time: the replay lock, and the epoch that fences a run that lost it.

Every replay publishes under one transactional id (``Settings.replay_transactional_id``),
so two runs publishing at once would fence each other in Kafka, and the loser would
strand whatever it had claimed. Runs take turns instead:

* **The lock** says who runs now. The live run holds it for its whole life; the
  operating system or the database server lets it go the moment that run's process (or
  its connection) dies: a session advisory lock on a connection of its own
  (PostgreSQL), an exclusive ``flock`` on a file beside the database (SQLite). A run
  that finds the lock taken waits for it, bounded, and then says which run holds it;
  it never fences a live run. A run that died holds nothing, so a rerun or an Airflow
  retry starts at once.
* **The epoch** (table ``replay_lease``) fences a run that lost the lock without dying
  (a cut database connection, a process paused for long). Taking the lock bumps it.
  Every write of a run (``Lease.transaction``) first updates the lease row *where the
  epoch is still its own*, in the same transaction, so the write either commits before
  the bump (and the new run, which reads the store after it, sees it) or finds a newer
  epoch and changes nothing (``ReplayFencedError``). On PostgreSQL that update locks
  the row until commit, so a bump waits for a write in flight; on SQLite each write
  holds the database's write lock.

Kafka is fenced by the new run itself (``orderproc.dlq.publish.fence``), after it
took the lease: then the old run can neither commit a transaction nor record one.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from orderproc.clock import utcnow
from orderproc.errors import ReplayBusyError, ReplayFencedError
from orderproc.store.engine import upsert_ignore
from orderproc.store.tables import ReplayLease

log = logging.getLogger(__name__)

NAME = "replay"
"""The lease row's key (one replay lease per store)."""

POLL_S = 0.5
"""How often a waiting run tries the lock again."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds the replay, or held it last (then ``claimer`` is None), as the lease row
    says."""

    replay_id: str | None
    claimer: str | None
    since: datetime | None
    host: str | None
    pid: int | None

    def __str__(self) -> str:
        if self.replay_id is None:
            return "a replay run that has not said who it is"
        since = f", since {self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        where = f" on {self.host} pid {self.pid}" if self.host else ""
        return f"replay {self.replay_id}{where}{since}"


class _Lock(Protocol):
    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    def alive(self) -> bool:
        """True while this holder still holds the lock (a connection may be cut under it)."""
        ...

    def held(self) -> bool:
        """True when some live run holds the lock (a look, from anywhere)."""
        ...


class Lease:
    """The replay lease of one run: ``acquire`` it, write through ``transaction``,
    ``release`` it (idempotent)."""

    def __init__(
        self,
        engine: Engine,
        *,
        replay_id: str,
        claimer: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.engine, self.replay_id, self.claimer = engine, replay_id, claimer
        self._lock = lock_for(engine)
        self._clock, self._sleep = clock, sleep
        self.epoch: int | None = None

    def acquire(self, wait_s: float) -> Holder | None:
        """Take the lease, waiting up to ``wait_s`` for a live run to finish; return the
        run waited for (None when the lease was free).

        Raises:
            ReplayBusyError: another run still holds it after ``wait_s``.
        """
        deadline = self._clock() + wait_s
        waited: Holder | None = None
        while not self._lock.try_acquire():
            holder = self.holder()
            if waited is None:
                log.warning("replay %s waits (up to %.0fs) for %s to finish",
                            self.replay_id, wait_s, holder)  # fmt: skip
            if waited is None or waited.claimer is None:
                # The row names the live holder once it has bumped the epoch; until then
                # it still names the last run, which has ended: look again.
                waited = holder
            left = deadline - self._clock()
            if left <= 0:
                raise ReplayBusyError(
                    f"{holder} holds the replay; replay {self.replay_id} waited "
                    f"{wait_s:.0f}s for it and changed nothing (run it again later)"
                )
            self._sleep(min(POLL_S, left))
        try:
            self.epoch = self._take()
        except BaseException:
            self._lock.release()
            raise
        return waited

    def _take(self) -> int:
        values = {
            "epoch": ReplayLease.epoch + 1,
            "holder": self.claimer,
            "replay_id": self.replay_id,
            "since": utcnow(),
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
        }
        bump = update(ReplayLease).where(ReplayLease.name == NAME).values(**values)
        with self.engine.begin() as conn:
            conn.execute(upsert_ignore(self.engine, ReplayLease.__table__).values(name=NAME))
            return int(conn.scalar(bump.returning(ReplayLease.epoch)) or 0)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction of this run's writes, refused once a newer run took the lease.

        Raises:
            ReplayFencedError: a newer run holds the lease; nothing was written.
        """
        if not self._lock.alive() and not self._lock.try_acquire():
            # Its lock went with a cut connection and another run holds it now; the epoch
            # check below would refuse too, once that run has bumped it.
            raise ReplayFencedError(
                f"replay {self.replay_id} lost the replay lock to {self.holder()}; "
                "it changes nothing more"
            )
        mine = (ReplayLease.name == NAME) & (ReplayLease.epoch == self.epoch)
        with self.engine.begin() as conn:
            touched = conn.execute(update(ReplayLease).where(mine).values(epoch=self.epoch))
            if self.epoch is None or touched.rowcount != 1:
                raise ReplayFencedError(
                    f"replay {self.replay_id} was taken over by {self.holder(conn)}; "
                    "it changes nothing more"
                )
            yield conn

    def holds(self) -> bool:
        """True while the lease row still carries this run's epoch."""
        if self.epoch is None:
            return False
        with self.engine.connect() as conn:
            now = conn.scalar(select(ReplayLease.epoch).where(ReplayLease.name == NAME))
        return now == self.epoch

    def holder(self, conn: Connection | None = None) -> Holder:
        """The run the lease row names now."""
        stmt = select(ReplayLease).where(ReplayLease.name == NAME)
        if conn is None:
            with self.engine.connect() as own:
                row = own.execute(stmt).first()
        else:
            row = conn.execute(stmt).first()
        if row is None:
            return Holder(None, None, None, None, None)
        return Holder(row.replay_id, row.holder, row.since, row.host, row.pid)

    def release(self) -> None:
        """Mark the lease free (if it is still this run's) and let go of the lock."""
        if self.epoch is None:
            return
        mine = (ReplayLease.name == NAME) & (ReplayLease.epoch == self.epoch)
        try:
            with self.engine.begin() as conn:  # the rest stays: who held it last, from when
                conn.execute(update(ReplayLease).where(mine).values(holder=None))
        except SQLAlchemyError as exc:  # the next run bumps the epoch anyway
            log.warning("replay %s could not clear the replay lease: %s", self.replay_id, exc)
        finally:
            self.epoch = None
            self._lock.release()

    def drop_lock(self) -> None:
        """Let go of the lock but not the epoch: what a cut connection does (tests)."""
        self._lock.release()


def live_holder(engine: Engine) -> str | None:
    """The claimer of the run that holds the replay now, or None when no run is alive
    (the lease row still names the last one: a killed run clears nothing)."""
    if not lock_for(engine).held():
        return None
    with engine.connect() as conn:
        holder: str | None = conn.scalar(select(ReplayLease.holder).where(ReplayLease.name == NAME))
    return holder


# -- the locks ----------------------------------------------------------------------------


def lock_for(engine: Engine) -> _Lock:
    """The replay lock of the store ``engine`` opens."""
    if engine.dialect.name == "postgresql":
        return _AdvisoryLock(engine)
    database = engine.url.database
    if database and database != ":memory:":
        path = Path(database)
        return _FileLock(path.with_name(f"{path.name}.replay-lock"))
    return _ThreadLock(_PROCESS_LOCKS.setdefault(str(engine.url), threading.Lock()))


class _AdvisoryLock:
    """A session advisory lock on a connection of its own, keyed by the store's schema
    (each schema is a store of its own); the server drops it with the session."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._key = 0

    def try_acquire(self) -> bool:
        conn = self.engine.connect()
        try:
            schema = str(conn.scalar(text("SELECT current_schema()")))
            key = advisory_key(schema)
            got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn, self._key = conn, key
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()  # the session ends, and the lock with it
        finally:
            conn.close()

    def alive(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.execute(text("SELECT 1"))
            conn.commit()
            return True
        except SQLAlchemyError:  # the server ended the session: the lock is gone
            self._conn = None
            conn.invalidate()
            conn.close()
            return False

    def held(self) -> bool:
        with self.engine.connect() as conn:
            key = advisory_key(str(conn.scalar(text("SELECT current_schema()"))))
            found = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = :hi AND objid = :lo AND objsubid = 1 AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
            )
        return bool(found)


def advisory_key(schema: str) -> int:
    """The advisory lock key of the replay of the store in ``schema``."""
    digest = hashlib.sha256(f"orderproc.replay:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _FileLock:
    """An exclusive ``flock`` on a file beside the SQLite database: per open file, so two
    runs in one process exclude each other too; the kernel drops it with the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops its lock

    def alive(self) -> bool:
        return self._fd is not None

    def held(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a look: let go at once
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


_PROCESS_LOCKS: dict[str, threading.Lock] = {}


class _ThreadLock:
    """An in-memory SQLite store lives in one process: a lock of that process."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._held = False

    def try_acquire(self) -> bool:
        self._held = self._lock.acquire(blocking=False)
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def alive(self) -> bool:
        return self._held

    def held(self) -> bool:
        return self._lock.locked()
