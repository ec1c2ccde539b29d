"""An approval remembers the Idempotency-Key its token was consumed with, so a retried consume replays.

Revision ID: 0007_consume_idempotency_key
Revises: 0010_run_tasks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_consume_idempotency_key'
down_revision = '0010_run_tasks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('approval_requests') as batch_op:
        batch_op.add_column(sa.Column('consume_idempotency_key', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('approval_requests') as batch_op:
        batch_op.drop_column('consume_idempotency_key')
