"""Approval requests: one per REQUIRE_APPROVAL decision, with frozen routing and its one-time token state.

Revision ID: 0002_approvals
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002_approvals'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('approval_requests',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('decision_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.Uuid(), nullable=True),
    sa.Column('reviewed_by', sa.Uuid(), nullable=True),
    sa.Column('review_notes', sa.String(length=1000), nullable=True),
    sa.Column('routing', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('routing_rule_id', sa.String(length=64), nullable=False),
    sa.Column('required_permission', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('denied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_jti', sa.String(length=64), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('token_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_sealed', sa.Text(), nullable=True),
    sa.Column('token_picked_up_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_consumed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_consumed_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'approved', 'denied', 'expired')",
                       name=op.f('ck_approval_requests_status_known')),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_approval_requests_decision_id_decisions')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_approval_requests_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approval_requests')),
    sa.UniqueConstraint('decision_id', name=op.f('uq_approval_requests_decision_id'))
    )
    with op.batch_alter_table('approval_requests', schema=None) as batch_op:
        batch_op.create_index('ix_approval_requests_due', ['status', 'expires_at'], unique=False)
        batch_op.create_index('ix_approval_requests_tenant_status', ['tenant_id', 'status', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('approval_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_approval_requests_tenant_status')
        batch_op.drop_index('ix_approval_requests_due')

    op.drop_table('approval_requests')
