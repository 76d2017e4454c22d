"""The words written to ``dlq_audit.action`` are ``AuditAction``s (``audit`` takes nothing
else: mypy checks every caller), and a review decision is audited under its status word."""

from __future__ import annotations

import pytest

from orderproc.dlq.audit import AuditAction
from orderproc.models import DlqStatus

pytestmark = pytest.mark.unit


def test_review_decisions_are_audited_under_their_status_word() -> None:
    # store.approve/reject write the target status's value as the action.
    assert {DlqStatus.APPROVED.value, DlqStatus.REJECTED.value} <= {a.value for a in AuditAction}
