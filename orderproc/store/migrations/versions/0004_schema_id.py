"""schema id: the registry schema id a dead letter's record named, and where it was kept

``dlq_events.schema_id`` (the 4-byte id of the Confluent wire format, so a BIGINT) and
``schema_version`` (``orders-value v3``) let the review page show it and the report
count dead letters by schema: a producer that deployed a bad schema is one line.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dlq_events") as batch:
        batch.add_column(sa.Column("schema_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("schema_version", sa.String(length=300), nullable=True))
        batch.create_index("ix_dlq_events_schema_id", ["schema_id"])


def downgrade() -> None:
    with op.batch_alter_table("dlq_events") as batch:
        batch.drop_index("ix_dlq_events_schema_id")
        batch.drop_column("schema_version")
        batch.drop_column("schema_id")
