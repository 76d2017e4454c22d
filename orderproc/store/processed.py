"""The processed-orders table: writes idempotent on ``orderId``, and the reads that resume state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import Error as DBAPIError
from sqlalchemy import ColumnElement, Connection, Engine, Exists, exists, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute

from orderproc.store.engine import store_error, store_errors, upsert_ignore
from orderproc.store.tables import DlqEvent, ProcessedOrder


class ProcessedRow(NamedTuple):
    """One row of ``processed_orders`` (a named tuple: the consumer builds one per order)."""

    order_id: str
    product: str
    price: float
    attempts: int
    source_topic: str
    source_partition: int
    source_offset: int
    processed_at: datetime
    replay_id: str | None = None

    def as_params(self) -> dict[str, Any]:
        return self._asdict()


_COLUMNS = ProcessedRow._fields
_STAGE = "_orderproc_incoming_orders"
_PG_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
    "(LIKE processed_orders INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PG_COPY = f"COPY {_STAGE} ({', '.join(_COLUMNS)}) FROM STDIN"
_PG_MERGE = (
    f"INSERT INTO processed_orders ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM {_STAGE} "
    "ON CONFLICT (order_id) DO NOTHING RETURNING order_id"
)


class OrderRepository:
    """Processed orders in PostgreSQL or SQLite.

    On PostgreSQL a batch is streamed with ``COPY`` into a session-local staging
    table and merged with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: one round
    trip of rows instead of a multi-thousand-parameter statement that the driver
    would parse again for every batch.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._copy = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self._insert = upsert_ignore(engine, ProcessedOrder.__table__).returning(
            ProcessedOrder.__table__.c.order_id
        )

    def record_processed(self, rows: Sequence[ProcessedRow]) -> set[str]:
        """Insert the rows in one transaction; return the ids that were new.

        A row whose ``orderId`` is already stored (a redelivery after a crash) is
        ignored, so callers can count only what this call really added.

        Raises:
            RowsRefusedError: the database refused some row's data (nothing was written).
            StoreError: the database could not be reached or failed as a whole.
        """
        if not rows:
            return set()
        try:
            with self.engine.begin() as conn:
                if self._copy:
                    return self._copy_merge(conn, rows)
                result = conn.execute(self._insert, [row.as_params() for row in rows])
                return {r[0] for r in result}
        except (SQLAlchemyError, DBAPIError, UnicodeEncodeError, ValueError) as exc:
            raise store_error(f"could not record {len(rows)} processed orders", exc) from exc

    @staticmethod
    def _copy_merge(conn: Connection, rows: Sequence[ProcessedRow]) -> set[str]:
        pooled = conn.connection
        raw: Any = pooled.driver_connection
        created = False
        try:
            with raw.cursor() as cur:
                if not pooled.info.get(_STAGE):
                    cur.execute(_PG_STAGE_DDL)
                    pooled.info[_STAGE] = created = True
                with cur.copy(_PG_COPY) as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(_PG_MERGE)
                return {r[0] for r in cur.fetchall()}
        except BaseException:
            if created:  # the failed transaction rolls the CREATE back with it
                pooled.info.pop(_STAGE, None)
            raise

    def price_totals(self) -> dict[str, tuple[int, float]]:
        """Count and sum of processed prices per product (to resume running averages)."""
        stmt = select(
            ProcessedOrder.product, func.count(), func.coalesce(func.sum(ProcessedOrder.price), 0)
        ).group_by(ProcessedOrder.product)
        with store_errors("could not read processed orders"), self.engine.connect() as conn:
            return {product: (int(n), float(total)) for product, n, total in conn.execute(stmt)}

    def processed_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.scalars(select(ProcessedOrder.order_id)))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(ProcessedOrder)) or 0)


def replayed_order_id() -> ColumnElement[str]:
    """The ``orderId`` a replay published for a ``dlq_events`` row: the reviewer's
    correction of it if any, else the failed order's."""
    corrected = DlqEvent.corrected_payload["orderId"].as_string()
    return func.coalesce(corrected, DlqEvent.order_id)


def replayed_copy_processed(
    replay_id: ColumnElement[str] | InstrumentedAttribute[str] | None = None,
) -> Exists:
    """Was the copy a replay published of a ``dlq_events`` row processed? (a condition on
    ``dlq_events``, for the report and the replay's outcomes alike).

    Yes when ``processed_orders`` holds the order it published with the id of the replay
    that published it (``replay_id``, default the row's own): the live consumer stores the
    replay id of the copy it processed (the ``replay.id`` lineage header). An order that
    got through only on a later replay counts for that later row, not for this one.
    """
    which = DlqEvent.replay_id if replay_id is None else replay_id
    return exists().where(
        ProcessedOrder.order_id == replayed_order_id(), ProcessedOrder.replay_id == which
    )
