"""initial schema: processed orders, DLQ events, audit

Revision ID: 0001
Revises: 
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('dlq_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dlq_topic', sa.String(length=249), nullable=False),
    sa.Column('dlq_partition', sa.Integer(), nullable=False),
    sa.Column('dlq_offset', sa.BigInteger(), nullable=False),
    sa.Column('message_key', sa.String(length=400), nullable=True),
    sa.Column('order_id', sa.String(length=200), nullable=True),
    sa.Column('product', sa.String(length=200), nullable=True),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('raw_value', sa.LargeBinary(), nullable=True),
    sa.Column('envelope', sa.JSON(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('error_class', sa.String(length=200), nullable=True),
    sa.Column('category', sa.String(length=40), nullable=False),
    sa.Column('retryable', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('consumer_group', sa.String(length=249), nullable=True),
    sa.Column('source_topic', sa.String(length=249), nullable=True),
    sa.Column('source_partition', sa.Integer(), nullable=True),
    sa.Column('source_offset', sa.BigInteger(), nullable=True),
    sa.Column('source_timestamp', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dead_lettered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('drained_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reviewed_by', sa.String(length=200), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.Column('corrected_payload', sa.JSON(), nullable=True),
    sa.Column('replay_count', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('replay_id', sa.String(length=64), nullable=True),
    sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('replay_partition', sa.Integer(), nullable=True),
    sa.Column('replay_offset', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dlq_topic', 'dlq_partition', 'dlq_offset', name='uq_dlq_coordinates')
    )
    with op.batch_alter_table('dlq_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dlq_events_category'), ['category'], unique=False)
        batch_op.create_index(batch_op.f('ix_dlq_events_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dlq_events_status'), ['status'], unique=False)

    op.create_table('processed_orders',
    sa.Column('order_id', sa.String(length=200), nullable=False),
    sa.Column('product', sa.String(length=200), nullable=False),
    sa.Column('price', sa.Float(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('source_topic', sa.String(length=249), nullable=False),
    sa.Column('source_partition', sa.Integer(), nullable=False),
    sa.Column('source_offset', sa.BigInteger(), nullable=False),
    sa.Column('replay_id', sa.String(length=64), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('order_id')
    )
    with op.batch_alter_table('processed_orders', schema=None) as batch_op:
        batch_op.create_index('ix_processed_orders_product', ['product'], unique=False)

    op.create_table('dlq_audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dlq_event_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['dlq_event_id'], ['dlq_events.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dlq_audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dlq_audit_dlq_event_id'), ['dlq_event_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('dlq_audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dlq_audit_dlq_event_id'))

    op.drop_table('dlq_audit')
    with op.batch_alter_table('processed_orders', schema=None) as batch_op:
        batch_op.drop_index('ix_processed_orders_product')

    op.drop_table('processed_orders')
    with op.batch_alter_table('dlq_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dlq_events_status'))
        batch_op.drop_index(batch_op.f('ix_dlq_events_order_id'))
        batch_op.drop_index(batch_op.f('ix_dlq_events_category'))

    op.drop_table('dlq_events')

