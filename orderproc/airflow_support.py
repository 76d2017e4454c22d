"""Glue between Airflow and orderproc: connections in, one function per DAG task.

The DAG files stay thin: each task imports one function from here. Kafka clients
are built by the Kafka provider's hooks from the ``kafka_default`` connection (so
its callbacks, OAuth and allow-list rules apply), with the settings each job
depends on laid over the connection's extra. The store is the ``orderproc_db``
connection when it exists, else ``ORDERPROC_DATABASE_URL`` / the embedded default.

Airflow is imported inside the functions: the rest of orderproc must not need it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, Producer
from sqlalchemy.engine import URL

from orderproc.config import Settings, get_settings
from orderproc.drain import drain_consumer_overrides, run_drain
from orderproc.replay import ReplayRequest, replay_id_for, replay_with_settings, summary_markdown
from orderproc.routing import reliable_producer_config

log = logging.getLogger(__name__)

KAFKA_CONN_ID = "kafka_default"
DB_CONN_ID = "orderproc_db"

_LIBPQ_EXTRAS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "connect_timeout",
    "target_session_attrs",
)
"""Connection extras that are libpq parameters; other extras are Airflow's own."""


def dlq_consumer(settings: Settings, conn_id: str = KAFKA_CONN_ID) -> Consumer:
    """An unsubscribed consumer from the Kafka connection, with the drain's settings on top."""
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

    class DrainConsumerHook(KafkaConsumerHook):
        # _get_client is the provider's own extension point (its hooks override it).
        def _get_client(self, config: dict[str, Any]) -> Consumer:
            return super()._get_client({**config, **drain_consumer_overrides(settings)})

    consumer: Consumer = DrainConsumerHook([settings.dlq_topic], kafka_config_id=conn_id).get_conn
    return consumer


def replay_producer(settings: Settings, conn_id: str = KAFKA_CONN_ID) -> Producer:
    """An idempotent ``acks=all`` producer from the Kafka connection."""
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

    reliable = reliable_producer_config(settings)
    overrides = {k: v for k, v in reliable.items() if k not in settings.kafka_config()}

    class ReplayProducerHook(KafkaProducerHook):
        def _get_client(self, config: dict[str, Any]) -> Producer:
            return super()._get_client({**config, **overrides})

    producer: Producer = ReplayProducerHook(kafka_config_id=conn_id).get_producer()
    return producer


def database_url(conn_id: str = DB_CONN_ID, settings: Settings | None = None) -> str:
    """The store's URL: the Airflow connection if defined, else the settings'."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return (settings or get_settings()).effective_database_url
    if conn.conn_type in ("postgres", "postgresql"):
        extra = conn.extra_dejson
        query = {k: str(extra[k]) for k in _LIBPQ_EXTRAS if extra.get(k) is not None}
        url = URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
            query=query,
        )
        return url.render_as_string(hide_password=False)
    if conn.conn_type == "sqlite":
        # Airflow keeps the file path in `host` (JSON form) or `schema` (URI form).
        return f"sqlite:///{conn.host or conn.schema}"
    return str(conn.get_uri())


def drain_dlq(
    *,
    max_messages: int | None = None,
    timeout_s: float = 10.0,
    run_id: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> dict[str, Any]:
    """Task ``orders_dlq_drain.drain``: drain the DLQ into the store; fails if Kafka is down."""
    settings = get_settings()
    result = run_drain(
        settings,
        consumer=dlq_consumer(settings, kafka_conn_id),
        database_url=database_url(db_conn_id, settings),
        max_messages=max_messages,
        metadata_timeout_s=timeout_s,
        actor=f"airflow:{run_id}" if run_id else "airflow",
    )
    return result.to_dict()


def replay_dlq(
    params: Mapping[str, Any],
    *,
    run_id: str | None = None,
    kafka_conn_id: str = KAFKA_CONN_ID,
    db_conn_id: str = DB_CONN_ID,
) -> dict[str, Any]:
    """Task ``orders_dlq_replay.replay``: replay the rows the params select."""
    settings = get_settings()
    request = ReplayRequest.from_params(params)
    result = replay_with_settings(
        settings,
        request,
        database_url=database_url(db_conn_id, settings),
        replay_id=replay_id_for(run_id),
        actor=f"airflow:{run_id}" if run_id else None,
        producer=lambda: replay_producer(settings, kafka_conn_id),
    )
    return result.to_dict()


def log_replay_summary(result: Mapping[str, Any]) -> str:
    """Task ``orders_dlq_replay.summarise``: the run as a Markdown table in the task log."""
    text = summary_markdown(result)
    log.info("replay summary\n%s", text)
    return text
