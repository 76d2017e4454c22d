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

KAFKA_VERSION = "4.1.1"
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


def with_dev_data_dir(settings: Settings) -> Settings:
    """``settings`` whose embedded store and reports live in the dev stack folder, unless
    ``ORDERPROC_DATA_DIR`` says otherwise (``make demo`` and ``make airflow`` share them)."""
    if "data_dir" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"data_dir": get_devstack_settings().devstack_dir})


@lru_cache(maxsize=1)
def get_devstack_settings() -> DevstackSettings:
    """Dev stack settings read once from the environment."""
    return DevstackSettings()
