"""Settings of the local dev stack (broker, PostgreSQL, Airflow), apart from production's.

Read from the same ``ORDERPROC_*`` variables as the production settings, but only
the dev stack uses them: production code never sees a dev port or folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderproc.config import Settings
from orderproc.errors import OrderProcError

CHECKOUT = Path(__file__).resolve().parents[1]
"""The repository checkout the dev stack runs from (it is a development tool)."""

KAFKA_VERSION = "4.4.0"
"""The one Kafka version used by the local dev stack and by docker-compose."""


REGISTRY_VERSION = "3.0.9"
"""Apicurio Registry, from Maven Central; 3.3.x needs Java 21 (Debian 12 ships 17)."""


class DevstackError(OrderProcError):
    """The local broker or database could not be started, stopped or found."""


class DevstackSettings(BaseSettings):
    """Where the dev stack keeps its files and which loopback ports it uses."""

    model_config = SettingsConfigDict(env_prefix="ORDERPROC_", frozen=True, extra="ignore")

    devstack_dir: Path = CHECKOUT / ".devstack"
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_start_timeout_s: float = Field(default=90.0, gt=0)
    registry_port: int = Field(default=8081, ge=1, le=65535)
    registry_start_timeout_s: float = Field(default=180.0, gt=0)

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers of the local broker."""
        return f"127.0.0.1:{self.kafka_port}"


def with_dev_defaults(settings: Settings) -> Settings:
    """``settings`` pointed at this dev stack where no ``ORDERPROC_*`` variable says otherwise:
    the embedded store and reports in the dev stack folder (``make demo`` and ``make
    airflow`` share them), and the broker it runs (the cluster when one runs, else the
    single broker on ``ORDERPROC_KAFKA_PORT``): production's default bootstrap never follows
    a dev port, so the dev tools do it here."""
    update: dict[str, object] = {}
    if "data_dir" not in settings.model_fields_set:
        update["data_dir"] = get_devstack_settings().devstack_dir
    if "bootstrap_servers" not in settings.model_fields_set:
        update["bootstrap_servers"] = dev_bootstrap()
    return settings.model_copy(update=update)


def dev_bootstrap() -> str:
    """Bootstrap servers of this dev stack's running cluster, else of its single broker."""
    from devstack.cluster import KafkaCluster

    cluster = KafkaCluster.made()
    if cluster is not None and cluster.running_pids():
        return cluster.bootstrap
    return get_devstack_settings().bootstrap


@lru_cache(maxsize=1)
def get_devstack_settings() -> DevstackSettings:
    """Dev stack settings read once from the environment."""
    return DevstackSettings()
