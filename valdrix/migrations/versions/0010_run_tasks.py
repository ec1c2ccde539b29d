"""HCP Terraform run tasks: each tenant's run-task settings and the queue of run-task requests.

Revision ID: 0010_run_tasks
Revises: 0008_notifications
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010_run_tasks'
down_revision = '0008_notifications'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_task_settings',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('hmac_key_sealed', sa.Text(), nullable=True),
    sa.Column('hmac_key_kid', sa.String(length=64), nullable=True),
    sa.Column('hmac_key_rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('mappings', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_run_task_settings_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_run_task_settings'))
    )
    op.create_table('run_task_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('task_result_id', sa.String(length=128), nullable=False),
    sa.Column('run_id', sa.String(length=128), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('organization_name', sa.String(length=256), nullable=False),
    sa.Column('workspace_id', sa.String(length=128), nullable=False),
    sa.Column('workspace_name', sa.String(length=256), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('access_token_sealed', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_holder', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_id', sa.Uuid(), nullable=True),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('last_error', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'callback', 'done', 'failed')", name=op.f('ck_run_task_jobs_status_known')),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_run_task_jobs_decision_id_decisions')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_run_task_jobs_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_task_jobs'))
    )
    with op.batch_alter_table('run_task_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_run_task_jobs_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_run_task_jobs_task_result', ['tenant_id', 'task_result_id'], unique=True)
        batch_op.create_index('ix_run_task_jobs_tenant_created', ['tenant_id', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('run_task_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_run_task_jobs_tenant_created')
        batch_op.drop_index('ix_run_task_jobs_task_result')
        batch_op.drop_index('ix_run_task_jobs_due')

    op.drop_table('run_task_jobs')
    op.drop_table('run_task_settings')
