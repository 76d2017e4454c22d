"""one review row per failure: dlq_copies, failure_key, copies; fold existing duplicates

Until now each DLQ record was its own review row, so a failure the transport delivered
twice (a consumer killed before its offsets moved) was reviewed twice. From here on a
failure is one ``dlq_events`` row (unique ``failure_key``) and each DLQ record of it is a
``dlq_copies`` row. Existing duplicates are folded: the row furthest along in review
(replayed > parked > rejected > approved > new, then the oldest) keeps the failure, the
others' copies and audit rows move to it, and a ``folded`` audit row names them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PROGRESS = {"replayed": 4, "parked": 3, "rejected": 2, "approved": 1, "new": 0}

events = sa.table(
    "dlq_events",
    sa.column("id", sa.Integer),
    sa.column("failure_key", sa.String),
    sa.column("copies", sa.Integer),
    sa.column("dlq_topic", sa.String),
    sa.column("dlq_partition", sa.Integer),
    sa.column("dlq_offset", sa.BigInteger),
    sa.column("consumer_group", sa.String),
    sa.column("source_topic", sa.String),
    sa.column("source_partition", sa.Integer),
    sa.column("source_offset", sa.BigInteger),
    sa.column("replay_count", sa.Integer),
    sa.column("status", sa.String),
    sa.column("drained_at", sa.DateTime(timezone=True)),
)
copies = sa.table(
    "dlq_copies",
    sa.column("dlq_topic", sa.String),
    sa.column("dlq_partition", sa.Integer),
    sa.column("dlq_offset", sa.BigInteger),
    sa.column("event_id", sa.Integer),
    sa.column("drained_at", sa.DateTime(timezone=True)),
)
audit = sa.table(
    "dlq_audit",
    sa.column("dlq_event_id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("actor", sa.String),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("note", sa.Text),
    sa.column("details", sa.JSON),
)


def failure_key(row: Any) -> str:
    """As ``orderproc.dlq.envelope.failure_key`` computes it for new records."""
    if row.source_topic and row.source_partition is not None and row.source_offset is not None:
        group = row.consumer_group or ""
        return (
            f"{group}|src:{row.source_topic}:{row.source_partition}:{row.source_offset}"
            f"|r{row.replay_count or 0}"
        )
    return f"dlq:{row.dlq_topic}:{row.dlq_partition}:{row.dlq_offset}"


def upgrade() -> None:
    op.create_table(
        "dlq_copies",
        sa.Column("dlq_topic", sa.String(length=249), nullable=False),
        sa.Column("dlq_partition", sa.Integer(), nullable=False),
        sa.Column("dlq_offset", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("drained_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["dlq_events.id"]),
        sa.PrimaryKeyConstraint("dlq_topic", "dlq_partition", "dlq_offset"),
    )
    op.create_index("ix_dlq_copies_event_id", "dlq_copies", ["event_id"])
    with op.batch_alter_table("dlq_events") as batch:
        batch.add_column(sa.Column("failure_key", sa.String(length=600), nullable=True))
        batch.add_column(sa.Column("copies", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("replay_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    _fold(op.get_bind())
    with op.batch_alter_table("dlq_events") as batch:
        batch.alter_column("failure_key", existing_type=sa.String(length=600), nullable=False)
        batch.drop_constraint("uq_dlq_coordinates", type_="unique")
        batch.create_unique_constraint("uq_dlq_failure_key", ["failure_key"])


def _fold(conn: sa.Connection) -> None:
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(sa.select(events).order_by(events.c.id)):
        groups[failure_key(row)].append(row)
    now = datetime.now(UTC)
    for key, rows in groups.items():
        keeper = max(rows, key=lambda r: (PROGRESS.get(r.status, 0), -r.id))
        folded = [r.id for r in rows if r.id != keeper.id]
        conn.execute(
            copies.insert(),
            [
                {"dlq_topic": r.dlq_topic, "dlq_partition": r.dlq_partition,
                 "dlq_offset": r.dlq_offset, "event_id": keeper.id, "drained_at": r.drained_at}
                for r in rows
            ],  # fmt: skip
        )
        conn.execute(
            events.update()
            .where(events.c.id == keeper.id)
            .values(failure_key=key, copies=len(rows))
        )
        if not folded:
            continue
        conn.execute(
            audit.update().where(audit.c.dlq_event_id.in_(folded)).values(dlq_event_id=keeper.id)
        )
        conn.execute(
            audit.insert().values(
                dlq_event_id=keeper.id, action="folded", actor="migration:0002", at=now,
                note="duplicate review rows of this failure folded into this one",
                details={"folded_ids": folded},
            )
        )  # fmt: skip
        conn.execute(events.delete().where(events.c.id.in_(folded)))


def downgrade() -> None:
    with op.batch_alter_table("dlq_events") as batch:
        batch.drop_constraint("uq_dlq_failure_key", type_="unique")
        batch.create_unique_constraint(
            "uq_dlq_coordinates", ["dlq_topic", "dlq_partition", "dlq_offset"]
        )
        batch.drop_column("replay_pending")
        batch.drop_column("copies")
        batch.drop_column("failure_key")
    op.drop_index("ix_dlq_copies_event_id", table_name="dlq_copies")
    op.drop_table("dlq_copies")
