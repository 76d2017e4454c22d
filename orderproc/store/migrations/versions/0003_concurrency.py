"""concurrency: a review version on each row, and the replay lease

``dlq_events.version`` counts the changes a reviewer acts on, so an action taken from
a stale view is refused instead of applied over another reviewer's work.
``replay_lease`` holds which replay run may write now and its fencing epoch: a run
that was fenced (a newer run took over) can change nothing any more.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dlq_events") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    lease = op.create_table(
        "replay_lease",
        sa.Column("name", sa.String(length=40), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("replay_id", sa.String(length=64), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
    )
    op.bulk_insert(lease, [{"name": "replay", "epoch": 0}])


def downgrade() -> None:
    op.drop_table("replay_lease")
    with op.batch_alter_table("dlq_events") as batch:
        batch.drop_column("version")
