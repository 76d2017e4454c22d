"""Prometheus metrics: each worker's registry and the ``/metrics`` + ``/healthz`` endpoint.

``server``: health, the HTTP endpoint and what every worker exports (process, build,
health); ``lag``: consumer lag from librdkafka's statistics; ``consumer`` and ``roles``:
the metrics of the consumer, the producer and the DLQ monitor. The README's "Operating
it" section lists every metric; ``deploy/prometheus/`` alerts on them.
"""

from orderproc.metrics.consumer import ConsumerMetrics, ReplayOutcome
from orderproc.metrics.roles import MonitorMetrics, ProducerMetrics
from orderproc.metrics.server import Health, MetricsServer, worker_registry

__all__ = [
    "ConsumerMetrics",
    "Health",
    "MetricsServer",
    "MonitorMetrics",
    "ProducerMetrics",
    "ReplayOutcome",
    "worker_registry",
]
