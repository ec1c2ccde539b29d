"""The idempotency index leads with the key, so the gate's replay lookup has one plausible plan.

Revision ID: 0005_idempotency_key_first
Revises: 0004_redeemable_approvals
"""

from __future__ import annotations

from alembic import op

revision = '0005_idempotency_key_first'
down_revision = '0004_redeemable_approvals'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_decisions_idempotency', table_name='decisions')
    op.create_index('ix_decisions_idempotency', 'decisions', ['idempotency_key', 'source', 'tenant_id'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_decisions_idempotency', table_name='decisions')
    op.create_index('ix_decisions_idempotency', 'decisions', ['tenant_id', 'source', 'idempotency_key'], unique=True)
