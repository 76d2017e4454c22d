"""replay outcomes: each publishing replay run, its rows and what became of them

``replay_runs`` carries a run across its tasks (the canary, the wait for the live
consumer's verdict, the steps): what it was asked, where it stands, the DLQ offsets it
looks from, its verdict. ``replay_run_rows`` is the run's selection, each row with its
outcome (queued, pending, processed, failed again, returned, skipped).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replay_runs",
        sa.Column("replay_id", sa.String(length=64), primary_key=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("canary", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("not_taken", sa.JSON(), nullable=True),
        sa.Column("dlq_positions", sa.JSON(), nullable=True),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reserved_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("said", sa.Text(), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_replay_runs_state", "replay_runs", ["state"])
    op.create_table(
        "replay_run_rows",
        sa.Column(
            "replay_id",
            sa.String(length=64),
            sa.ForeignKey("replay_runs.replay_id"),
            primary_key=True,
        ),
        sa.Column("event_id", sa.Integer(), sa.ForeignKey("dlq_events.id"), primary_key=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("trip_topic", sa.String(length=249), nullable=True),
        sa.Column("trip_partition", sa.Integer(), nullable=True),
        sa.Column("trip_offset", sa.BigInteger(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_replay_run_rows_event_id", "replay_run_rows", ["event_id"])
    op.create_index("ix_replay_run_rows_outcome", "replay_run_rows", ["replay_id", "outcome"])


def downgrade() -> None:
    op.drop_table("replay_run_rows")
    op.drop_table("replay_runs")
