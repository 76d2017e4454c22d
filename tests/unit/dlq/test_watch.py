"""The DLQ monitor's interval reads (``orderproc.dlq.watch.Watch``) when a source fails:
counted, said once per distinct failure, and the other source still read."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from orderproc.config import Settings
from orderproc.dlq.watch import Watch
from orderproc.metrics import MonitorMetrics
from orderproc.store.engine import make_engine
from orderproc.store.migrate import upgrade

pytestmark = pytest.mark.unit


class _DeadAdmin:
    """An admin client whose broker never answers."""

    def list_topics(self, **_kwargs: Any) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))


def _failures(metrics: MonitorMetrics, source: str) -> float | None:
    return metrics.registry.get_sample_value(
        "orderproc_monitor_refresh_failures_total", {"source": source}
    )


def test_a_source_that_fails_is_counted_logged_once_and_the_other_still_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade(engine)
    metrics = MonitorMetrics(group="dlq-group", clock=lambda: 1000.0)
    watch = Watch(Settings(database_url=url), metrics, interval_s=1)

    with caplog.at_level(logging.ERROR, logger="orderproc.dlq.watch"):
        for _ in range(3):
            watch.refresh(_DeadAdmin(), engine)  # type: ignore[arg-type]
    engine.dispose()

    assert _failures(metrics, "kafka") == 3
    assert _failures(metrics, "store") == 0
    said = [r.getMessage() for r in caplog.records if r.name == "orderproc.dlq.watch"]
    assert said == ["monitor: cannot read kafka: broker down"]
    refreshed = metrics.registry.get_sample_value(
        "orderproc_monitor_last_refresh_timestamp_seconds", {"source": "store"}
    )
    assert refreshed is not None and refreshed > 0
    assert (
        metrics.registry.get_sample_value("orderproc_review_backlog_events", {"status": "new"}) == 0
    )
    assert metrics.registry.get_sample_value("orderproc_review_oldest_unresolved_age_seconds") == 0
