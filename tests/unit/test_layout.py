"""The package's shape: small modules, a docstring line each, no cycles, no upward imports.

Layers, lowest first. A module may import its own wing and any lower layer, never
a higher one: the core knows nothing of Kafka clients or tables; the worker and
the dead-letter wing never import the adapters (Airflow, CLI, dev stack) that
drive them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "orderproc"
DEVSTACK = PACKAGE.parent / "devstack"
"""Dev tooling beside the package (not shipped), held to the same size and docstrings."""
MAX_LINES = 400

CORE = {"config", "errors", "models", "headers", "records", "clock", "serde", "logs", "metrics"}
ALLOWED = {
    "core": {"core"},
    "kafka": {"core", "kafka"},
    "store": {"core", "store"},
    "dlq": {"core", "kafka", "store", "dlq"},
    "worker": {"core", "kafka", "store", "dlq", "worker"},
    "report": {"core", "store", "report"},
    "status": {"core", "kafka", "store", "dlq", "report", "status"},
}
"""Which wings each wing may import; adapters (airflow, cli, devstack) may import anything."""


def modules(*, with_devstack: bool = False) -> list[Path]:
    roots = [PACKAGE, DEVSTACK] if with_devstack else [PACKAGE]
    return sorted(p for root in roots for p in root.rglob("*.py") if "migrations" not in p.parts)


def name_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    return "core" if parts[1] in CORE else parts[1]


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "orderproc":
                found |= {f"orderproc.{a.name}" for a in node.names}
            elif node.module.startswith("orderproc."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("orderproc.")}
    return found


def test_no_module_is_over_400_lines() -> None:
    long = {
        name_of(p): n
        for p in modules(with_devstack=True)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_module_opens_with_a_docstring() -> None:
    missing = [
        name_of(p)
        for p in modules(with_devstack=True)
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert missing == []


def test_no_import_cycles_at_module_level() -> None:
    graph = {name_of(p): imports(p, top_level_only=True) for p in modules()}
    known = set(graph)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node] & known):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_upward_imports() -> None:
    upward = []
    for path in modules():
        here = name_of(path)
        allowed = ALLOWED.get(wing(here))
        if allowed is None:  # an adapter: airflow, cli, devstack
            continue
        for dep in imports(path, top_level_only=False):
            if wing(dep) not in allowed:
                upward.append(f"{here} -> {dep}")
    assert upward == []
