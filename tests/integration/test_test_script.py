"""``scripts/test.sh``'s load: ``ORDERPROC_TEST_LOAD=N`` runs the suite beside N busy
processes, stopped by pid when it ends; a bad value of it or of ``ORDERPROC_TEST_LANES`` is
one line before anything starts."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import subprocess

def test_the_busy_processes_run_beside_the_tests():
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    busy = [line for line in out.splitlines() if "while True: pass" in line]
    print("busy:", len(busy))
    assert len(busy) >= 2
"""


def _run(tmp_path: Path, load: str, lanes: str = "2") -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "ORDERPROC_TEST_LOAD": load, "ORDERPROC_TEST_LANES": lanes,
           "SKIP_LINT": "1"}  # fmt: skip
    # Services given: the script starts none of its own, only the load.
    env.setdefault("ORDERPROC_TEST_BOOTSTRAP", "127.0.0.1:1")
    env.setdefault("ORDERPROC_TEST_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    return subprocess.run(
        ["bash", "scripts/test.sh", "-p", "no:cacheprovider", "-s", str(probe)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_load_of_two_busy_processes_runs_beside_the_suite_and_is_stopped_after(
    tmp_path: Path,
) -> None:
    done = _run(tmp_path, "2")

    assert done.returncode == 0, done.stderr[-3000:]
    said = re.search(r"== load: 2 busy processes \(pids (\d+) (\d+)\)", done.stderr)
    assert said, done.stderr[-2000:]
    for pid in map(int, said.groups()):  # signalled by pid when the script ended ...
        assert _ends(pid), f"busy process {pid} still runs"  # ... and gone soon after


def test_a_load_that_is_not_a_number_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    done = _run(tmp_path, "lots")

    assert done.returncode == 2
    assert done.stderr.strip() == (
        "test: error: ORDERPROC_TEST_LOAD must be a number of busy processes from 0 to 64, "
        "got 'lots'"
    )


def test_lanes_other_than_one_or_two_are_one_line_before_anything_starts(tmp_path: Path) -> None:
    done = _run(tmp_path, "0", lanes="8")

    assert done.returncode == 2
    assert done.stderr.strip() == "test: error: ORDERPROC_TEST_LANES must be 1 or 2, got '8'"


def _ends(pid: int, within_s: float = 30.0) -> bool:
    """True once ``pid`` is gone or a zombie (bounded: a signal is delivered, not awaited)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True
        if "\nState:\tZ" in state:
            return True
        time.sleep(0.05)
    return False
