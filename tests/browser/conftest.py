"""A real headless Chromium (Debian's ``chromium``, driven by Playwright, which downloads
no browser) against the session's local Airflow, and a folder for its screenshots.

Screenshots go to ``$ORDERPROC_TEST_ARTIFACTS/browser`` when that is set, else to a
folder of pytest's tmp dir; the folder is printed at the end of the session.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_SHOTS = pytest.StashKey[Path]()


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    """The browser, started once for the browser tests; it and Playwright's driver stop
    when they are done, not at the end of the session."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/ensure-packages.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: `make install` (a dev dependency)")

    from playwright.sync_api import expect

    # Airflow's UI fetches each page's data from its API after the page loads: on a busy
    # machine (ORDERPROC_TEST_LOAD) that takes longer than Playwright's default 5 s. The
    # expectations wait on the page's state, bounded; only the bound is longer.
    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def shots_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's screenshots go."""
    given = os.environ.get("ORDERPROC_TEST_ARTIFACTS")
    folder = Path(given) / "browser" if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[_SHOTS] = folder
    return folder


@pytest.fixture
def shoot(shots_dir: Path, request: pytest.FixtureRequest) -> Any:
    """``shoot(page, "step name")``: a numbered screenshot of the whole window."""
    count = [0]
    test = re.sub(r"\W+", "-", request.node.name).strip("-")

    def take(page: Any, step: str) -> Path:
        count[0] += 1
        name = re.sub(r"\W+", "-", step)
        path = shots_dir / f"{test}-{count[0]:02d}-{name}.png"
        page.screenshot(path=str(path))
        return path

    return take


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folder = config.stash.get(_SHOTS, None)
    if folder is not None:
        terminalreporter.write_line(f"browser screenshots: {folder}")
