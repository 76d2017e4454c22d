"""The production wheel, built from this checkout as a release would build it, carries no dev
stack: no module of it, no dependency on ``cryptography`` (the dev CA's), no import of either;
and its ``orderproc dev``/``orderproc demo`` say in one line where the dev tools live.

Builds with hatchling, the backend ``[build-system]`` names, into a temporary folder (a
couple of seconds; nothing is written into the checkout).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DEV_ONLY = {"devstack", "cryptography", "bench", "tests"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "--target", "wheel", "--directory", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("orderproc-*.whl")
    yield built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_package_and_no_dev_stack(wheel: Path) -> None:
    names = _names(wheel)
    tops = {name.split("/")[0] for name in names}

    assert "orderproc/worker/consumer.py" in names and "orderproc/_schemas/order.avsc" in names
    assert tops == {"orderproc", next(t for t in tops if t.endswith(".dist-info"))}
    assert not [n for n in names if "devstack" in n or n.endswith((".xml", ".sha256"))]


def test_the_wheel_does_not_depend_on_cryptography(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(meta_name).decode())
    required = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]

    assert required, "the wheel should name its dependencies"
    assert not [r for r in required if r.split(">")[0].split("=")[0].split("[")[0] in DEV_ONLY]
    assert any(r.startswith("confluent-kafka") for r in required)


def test_no_module_of_the_wheel_imports_dev_tooling(wheel: Path) -> None:
    found = []
    with zipfile.ZipFile(wheel) as archive:
        for name in (n for n in archive.namelist() if n.endswith(".py")):
            for node in ast.walk(ast.parse(archive.read(name))):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )
                found += [f"{name}: {m}" for m in modules if m.split(".")[0] in DEV_ONLY]
    # The one exception: the CLI adds `dev` and `demo` when a checkout's devstack is there.
    assert found == ["orderproc/cli/__init__.py: devstack.cli"] * 2


def test_the_installed_cli_says_where_the_dev_tools_live(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    # The wheel's package first, and this checkout (which the dev venv puts on sys.path
    # for its devstack) taken away: what a production install sees.
    site, repo = str(tmp_path / "site"), str(REPO)
    code = (
        "import sys; "
        f"sys.path[:] = [{site!r}] + [p for p in sys.path if p != {repo!r}]; "
        "sys.argv[0] = 'orderproc'; "
        "from orderproc.cli import main; main()"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for args in (["dev", "up", "--brokers", "3"], ["demo"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stderr[-2000:]
        assert done.stderr.startswith(f"orderproc: error: `orderproc {args[0]}` is a development")
        assert "checkout of the orderproc repository" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
