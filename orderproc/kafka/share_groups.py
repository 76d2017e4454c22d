"""Share groups (KIP-932) as queue mode needs them: the group configs it sets and checks.

The group's ``share.delivery.count.limit`` leaves ``CRASH_HEADROOM`` deliveries beyond
``max_attempts`` (``orderproc.worker.share`` says why); ``share.auto.offset.reset=earliest``
reads orders written before the group's first member; ``share.isolation.level=
read_committed`` never reads a replay's aborted transaction; ``share.record.lock.duration.ms``
outlasts the longest backoff by ``LOCK_HEADROOM_S`` (a member holds a failing record through
its backoff: a lock that expired first would hand it out again, a delivery spent).
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from orderproc.config import Settings
from orderproc.errors import BrokerError, OrderProcError
from orderproc.kafka.clients import Admin

CRASH_HEADROOM = 2
"""Deliveries the broker allows beyond ``max_attempts``: spent by members that died."""
MAX_DELIVERY_LIMIT = 10
"""The broker's ceiling for ``share.delivery.count.limit`` (its default
``group.share.max.delivery.count.limit``)."""


LOCK_S = (30.0, 60.0)
"""The record lock queue mode sets: the broker's default at least, and at most its ceiling
(``group.share.max.record.lock.duration.ms``; the broker refuses more)."""
LOCK_HEADROOM_S = 15.0
"""How much longer than the longest backoff a record stays locked to its member."""


def share_group_configs(settings: Settings, longest_backoff_s: float) -> dict[str, str]:
    """The group configs queue mode relies on (see the module's docstring), for a member
    whose longest backoff is ``longest_backoff_s`` (``RetryPolicy.longest_delay``)."""
    if settings.max_attempts > MAX_DELIVERY_LIMIT:
        raise OrderProcError(
            f"ORDERPROC_MAX_ATTEMPTS={settings.max_attempts} is more deliveries than a share "
            f"group allows ({MAX_DELIVERY_LIMIT})"
        )
    lowest, highest = LOCK_S
    if longest_backoff_s + LOCK_HEADROOM_S > highest:
        raise OrderProcError(
            f"a share group member holds a failing order through its backoff, under a lock of "
            f"at most {highest:g}s: the longest backoff ({longest_backoff_s:g}s) must stay under "
            f"{highest - LOCK_HEADROOM_S:g}s (ORDERPROC_BACKOFF_MAX_S)"
        )
    limit = min(MAX_DELIVERY_LIMIT, max(2, settings.max_attempts + CRASH_HEADROOM))
    lock_ms = round(max(lowest, longest_backoff_s + LOCK_HEADROOM_S) * 1000)
    return {
        "share.delivery.count.limit": str(limit),
        "share.auto.offset.reset": "earliest",
        "share.isolation.level": "read_committed",
        "share.record.lock.duration.ms": str(lock_ms),
    }


def configure_share_group(settings: Settings, longest_backoff_s: float) -> None:
    """Set ``share_group_configs`` on the group and wait until the broker applies them
    (it does so asynchronously); a broker without share groups is a one-line error."""
    wanted = share_group_configs(settings, longest_backoff_s)
    entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
               for name, value in wanted.items()]  # fmt: skip
    name = settings.consumer_group
    group = ConfigResource(ResourceType.GROUP, name, incremental_configs=entries)
    timeout = settings.admin_timeout_s
    with Admin(settings.kafka_config()) as admin:
        try:
            for future in admin.incremental_alter_configs([group]).values():
                future.result(timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot configure share group {settings.consumer_group}: {exc.args[0].str()}"
            ) from exc
        deadline = time.monotonic() + timeout
        while True:
            described = admin.describe_configs([ConfigResource(ResourceType.GROUP, name)])
            configs = next(iter(described.values())).result(timeout=timeout)
            if all(configs[k].value == v for k, v in wanted.items() if k in configs):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"share group {settings.consumer_group} did not take its configs "
                    f"{wanted} within {timeout:g}s"
                )
            time.sleep(0.1)
