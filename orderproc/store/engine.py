"""Engines for PostgreSQL (production) and SQLite (embedded default)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from orderproc.errors import ConfigError, RowsRefusedError, StoreError

SUPPORTED = ("postgresql", "sqlite")


def normalize_url(url: str) -> str:
    """Prefer psycopg 3 for plain ``postgresql://`` URLs (Airflow-style connection URIs).

    Raises:
        ConfigError: not a URL, or not a database orderproc supports. The message
            never repeats the URL: it may hold a password.
    """
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018  # a port that is not a number fails here, not later
    except Exception:
        raise ConfigError(
            "invalid database URL (ORDERPROC_DATABASE_URL): expected "
            "postgresql://user:password@host:port/database or sqlite:///path"
        ) from None  # the cause would repeat the URL, password included
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SUPPORTED:
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r} in "
            f"{parsed.render_as_string(hide_password=True)}: use postgresql:// or sqlite://"
        )
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL and a busy timeout so workers and tools can share it."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@contextmanager
def open_engine(url: str, **kwargs: Any) -> Iterator[Engine]:
    """An engine for the length of a ``with`` block; its connections are closed after it."""
    engine = make_engine(url, **kwargs)
    try:
        yield engine
    finally:
        engine.dispose()


def redacted(url: str) -> str:
    """The URL as a person may see it: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing of it that could be a secret
        return "<invalid database URL>"


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Database errors inside the block become one-line ``StoreError``s naming ``what``."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
        raise store_error(what, exc) from exc


def store_error(what: str, exc: BaseException) -> StoreError:
    """One line for a user: what failed, the driver's first line, and the usual remedy.

    A refusal of the data itself (a value too long, a broken constraint) becomes
    ``RowsRefusedError``: the database is fine, a row is not.
    """
    cause = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    if refuses_rows(exc):
        return RowsRefusedError(f"{what}: the database refused the data ({cause})")
    return StoreError(f"{what} ({cause}); is it reachable and migrated (orderproc db upgrade)?")


def refuses_rows(exc: BaseException) -> bool:
    """True when the error is about the data (one row can cause it), not the connection."""
    orig = getattr(exc, "orig", None) or exc
    data_errors: tuple[type[BaseException], ...] = (
        sa_exc.DataError,
        sa_exc.IntegrityError,
        psycopg.DataError,
        psycopg.IntegrityError,
        UnicodeEncodeError,  # a string the driver cannot encode (a lone surrogate)
        ValueError,  # psycopg refuses NUL characters in text before sending
    )
    return isinstance(exc, data_errors) or isinstance(orig, data_errors)


def upsert_ignore(engine: Engine, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the engine's dialect."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise StoreError(f"unsupported database dialect {engine.dialect.name!r}")
