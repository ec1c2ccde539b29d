"""Index of the approvals a priced admission can still redeem.

Revision ID: 0004_redeemable_approvals
Revises: 0003_spend
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_redeemable_approvals'
down_revision = '0003_spend'
branch_labels = None
depends_on = None

REDEEMABLE = "status = 'approved' AND token_consumed_at IS NULL"


def upgrade() -> None:
    op.create_index('ix_approval_requests_redeemable', 'approval_requests', ['tenant_id', 'token_expires_at'],
                    unique=False, postgresql_where=sa.text(REDEEMABLE), sqlite_where=sa.text(REDEEMABLE))


def downgrade() -> None:
    op.drop_index('ix_approval_requests_redeemable', table_name='approval_requests')
