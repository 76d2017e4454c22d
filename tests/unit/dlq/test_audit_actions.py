"""Every word written to ``dlq_audit.action`` is an ``AuditAction`` (the one list that
``orderproc status`` and the review page read them through)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from orderproc.dlq.audit import AuditAction
from orderproc.models import DlqStatus

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[3] / "orderproc"
WRITERS = {"audit": 2, "_finish": 2}
"""Functions that write an audit row, and the position of their action argument."""


def written_words() -> dict[str, str]:
    """Each string literal passed as an action, and where."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            at = WRITERS.get(name or "")
            if at is None or len(node.args) <= at:
                continue
            arg = node.args[at]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found[arg.value] = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
    return found


def test_every_action_written_is_an_audit_action() -> None:
    words = written_words()
    assert words  # the scan found the writers
    known = {a.value for a in AuditAction}
    assert {w: where for w, where in words.items() if w not in known} == {}


def test_review_decisions_are_audited_under_their_status_word() -> None:
    # store.approve/reject write the target status's value as the action.
    assert {DlqStatus.APPROVED.value, DlqStatus.REJECTED.value} <= {a.value for a in AuditAction}
