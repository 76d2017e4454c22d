"""``orderproc status``: how far behind the system is and what needs attention, on one screen.

Looks at the broker and every group the system runs (``kafka``), the store's review
backlog and audit rows (``store``), and the workers given with ``--metrics``
(``workers``); ``model`` is what it found, ``render`` the screen. The part it cannot look
at (broker or store unreachable) is an error, and the others are still shown.
"""

from __future__ import annotations

from datetime import UTC, datetime

from orderproc.config import Settings
from orderproc.errors import BrokerError, ConfigError, StoreError
from orderproc.models import REVIEW_SLO_HOURS
from orderproc.status.kafka import look_at_kafka
from orderproc.status.model import Broker, Status
from orderproc.status.store import look_at_store
from orderproc.status.workers import look_at_workers


def collect(
    settings: Settings,
    *,
    metrics_urls: list[str] | None = None,
    window_s: float = 2.0,
    timeout_s: float = 5.0,
    review_slo_hours: float = REVIEW_SLO_HOURS,
) -> Status:
    """Look at everything once (Kafka's groups twice, ``window_s`` apart)."""
    checked = datetime.now(UTC).isoformat(timespec="seconds")
    status = Status(checked_at=checked, broker=Broker(settings.bootstrap_servers))
    try:
        look_at_kafka(settings, status, window_s=window_s, timeout_s=timeout_s)
    except BrokerError as exc:
        status.errors.append(str(exc))
    try:
        look_at_store(settings, status, review_slo_hours=review_slo_hours)
    except (StoreError, ConfigError) as exc:  # ConfigError: a database URL it cannot use
        status.errors.append(str(exc))
    look_at_workers(metrics_urls or [], status, timeout_s=timeout_s)
    return status
