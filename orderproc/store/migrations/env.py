"""Alembic environment: runs online against the engine handed in by ``orderproc.store.migrate``."""

from __future__ import annotations

from alembic import context

from orderproc.store.tables import Base

MIGRATION_LOCK = 0x6F72646572  # "order": the advisory lock key of orderproc's migrations

engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"

with engine.connect() as connection:
    if sqlite:
        # Batch migrations rebuild a table (copy, drop, rename); rows of other tables that
        # point at it would block the drop. Off for the migration only, outside any transaction.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # end the autobegun transaction: the pragma holds outside it
    with connection.begin():
        # One migration at a time: several workers started at once on a fresh store (queue
        # mode's many consumers) would each find no version and create the same tables.
        # The second waits here, then finds the first one's version and has nothing to do.
        if sqlite:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, up to the busy timeout
        else:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite
        )
        with context.begin_transaction():
            context.run_migrations()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
