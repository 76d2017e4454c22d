"""Share groups (KIP-932) as queue mode needs them: the group configs it sets and checks.

The group's ``share.delivery.count.limit`` leaves ``CRASH_HEADROOM`` deliveries beyond
``max_attempts`` (``orderproc.worker.share`` says why); ``share.auto.offset.reset=earliest``
reads orders written before the group's first member; ``share.isolation.level=
read_committed`` never reads a replay's aborted transaction.
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


def share_group_configs(settings: Settings) -> dict[str, str]:
    """The group configs queue mode relies on (see the module's docstring)."""
    if settings.max_attempts > MAX_DELIVERY_LIMIT:
        raise OrderProcError(
            f"ORDERPROC_MAX_ATTEMPTS={settings.max_attempts} is more deliveries than a share "
            f"group allows ({MAX_DELIVERY_LIMIT})"
        )
    limit = min(MAX_DELIVERY_LIMIT, max(2, settings.max_attempts + CRASH_HEADROOM))
    return {
        "share.delivery.count.limit": str(limit),
        "share.auto.offset.reset": "earliest",
        "share.isolation.level": "read_committed",
    }


def configure_share_group(settings: Settings) -> None:
    """Set ``share_group_configs`` on the group and wait until the broker applies them
    (it does so asynchronously); a broker without share groups is a one-line error."""
    wanted = share_group_configs(settings)
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
