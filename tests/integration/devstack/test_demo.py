"""`make demo` stays true: the demo runs end to end and tells its story."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orderproc.config import Settings

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(
    make_settings: Callable[..., Settings],
    settings_env: Callable[[Settings], dict[str, str]],
    tmp_path: Path,
) -> None:
    settings = make_settings(partitions=2, reports_dir=tmp_path / "reports", backoff_initial_s=0.2)

    result = subprocess.run(
        [sys.executable, "-m", "orderproc", "demo", "--orders", "30", "--rate", "0"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.count("[producer] Produced: ") == 30
    assert "[consumer] Processed " in out
    assert "[dlq     ] --- DLQ EVENT ---" in out
    summary = next(line for line in out.splitlines() if line.startswith("== summary:"))
    fields = dict(p.split("=") for p in summary.split() if "=" in p and p != "==")
    dead = int(fields["dead-lettered"])
    assert int(fields["processed"]) + dead == 30
    assert f"== drain: {dead} new DLQ records stored" in out
    assert out.count("== review: ") == dead
    assert f"== replay: {dead} orders republished" in out
    assert "replay success rate" in out
    report_line = next(line for line in out.splitlines() if line.startswith("== report: "))
    assert Path(report_line.split()[2]).is_file()
    assert list((tmp_path / "reports").glob("*/chart.png"))
