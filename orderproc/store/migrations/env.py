"""Alembic environment: runs online against the engine handed in by ``orderproc.store.migrate``."""

from __future__ import annotations

from alembic import context

from orderproc.store.tables import Base

engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"

with engine.connect() as connection:
    if sqlite:
        # Batch migrations rebuild a table (copy, drop, rename); rows of other tables that
        # point at it would block the drop. Off for the migration only, outside any transaction.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # end the autobegun transaction: the pragma holds outside it
    with connection.begin():
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite
        )
        with context.begin_transaction():
            context.run_migrations()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
