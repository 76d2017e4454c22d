"""Where the DAG tasks find the store: the ``orderproc_db`` connection, else the settings."""

from __future__ import annotations

from sqlalchemy.engine import URL

from orderproc.config import Settings, get_settings

DB_CONN_ID = "orderproc_db"
KAFKA_CONN_ID = "kafka_default"

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
