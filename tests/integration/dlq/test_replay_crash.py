"""A replay killed (SIGKILL) at any point of a chunk and rerun at once publishes every
approved row exactly once, as a read_committed consumer of ``orders`` sees it.

The replay runs in its own process, which kills itself at the named point of its second
chunk; the rerun is an ordinary replay. Reconciled by replay lineage (the DLQ coordinates
each copy carries) and by the rows' state in the store.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from orderproc.config import Settings
from orderproc.dlq.replay import ReplayRequest, replay_with_settings
from orderproc.dlq.store import DlqStore
from orderproc.store.engine import open_engine

pytestmark = pytest.mark.integration

ROWS = 230  # three chunks of at most 100

KILLER = """
import os, signal, sys
from orderproc.config import Settings
from orderproc.dlq.replay import ReplayRequest, replay_with_settings

point, chunk = sys.argv[1], int(sys.argv[2])
seen = {"n": 0}

def crash(at: str) -> None:
    if at == point:
        seen["n"] += 1
        if seen["n"] == chunk:
            os.kill(os.getpid(), signal.SIGKILL)

replay_with_settings(Settings(), ReplayRequest(max_messages=1000), replay_id="run-killed",
                     crash=crash)
"""


@pytest.mark.parametrize(
    "point",
    [
        "produced",  # records handed to the producer, the transaction open
        "acknowledged",  # the broker acknowledged them, the store knows nothing yet
        "pending",  # the store recorded where they went, the transaction is not committed
        "committed",  # the transaction committed, the rows are not marked replayed yet
        "recorded",  # the chunk is fully recorded; the next chunk never started
    ],
)
def test_a_replay_killed_mid_way_and_rerun_publishes_each_row_once(
    point: str,
    make_settings: Callable[..., Settings],
    pg_url: str,
    seed_dlq: Callable[..., list[int]],
    make_orders: Callable[..., Any],
    settings_env: Callable[[Settings], dict[str, str]],
    read_all: Callable[..., list[Any]],
    headers_of: Callable[..., dict[str, str]],
) -> None:
    settings = make_settings(partitions=2, database_url=pg_url)
    with open_engine(pg_url) as engine:
        store = DlqStore(engine)
        ids = seed_dlq(store, make_orders(ROWS))
        store.approve(ids, actor="alice")

    killed = subprocess.run(
        [sys.executable, "-c", KILLER, point, "2"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # died at the point, by SIGKILL

    rerun = replay_with_settings(settings, ReplayRequest(max_messages=1000), replay_id="run-2")

    copies = read_all(settings.orders_topic)
    lineage = Counter(headers_of(m)["replay.dlq.offset"] for m in copies)
    assert len(lineage) == ROWS  # every approved row was published ...
    assert set(lineage.values()) == {1}  # ... exactly once
    with open_engine(pg_url) as engine:
        rows = DlqStore(engine).list_events(limit=1000)
    assert {(e.status, e.replay_count, e.replay_pending, e.claimed_by) for e in rows} == {
        ("replayed", 1, False, None)
    }
    where = {(m.partition(), m.offset()) for m in copies}
    assert {(e.replay_partition, e.replay_offset) for e in rows} == where  # the store agrees
    committed_before = ROWS - len(rerun.delivered) - rerun.recovered[0]
    assert committed_before == {"produced": 100, "acknowledged": 100, "pending": 100,
                                "committed": 100, "recorded": 200}[point]  # fmt: skip
