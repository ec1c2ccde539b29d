"""Reservation reconciliations, daily cost records (actual spend), job leases for the worker.

Revision ID: 0003_spend
Revises: 0002_approvals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003_spend'
down_revision = '0002_approvals'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_status', sa.String(length=16), nullable=True),
    sa.Column('last_finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_leases'))
    )
    op.create_table('cost_records',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('period_key', sa.String(length=32), nullable=False),
    sa.Column('scope_key', sa.String(length=128), nullable=False),
    sa.Column('cost_date', sa.Date(), nullable=False),
    sa.Column('amount_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('batch_id', sa.Uuid(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_cost_records_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cost_records'))
    )
    with op.batch_alter_table('cost_records', schema=None) as batch_op:
        batch_op.create_index('ix_cost_records_identity',
                              ['tenant_id', 'source', 'period_key', 'scope_key', 'cost_date'], unique=True)
        batch_op.create_index('ix_cost_records_scope_date', ['tenant_id', 'scope_key', 'cost_date'], unique=False)
        batch_op.create_index('ix_cost_records_tenant_date', ['tenant_id', 'cost_date'], unique=False)

    op.create_table('reservation_reconciliations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('decision_id', sa.Uuid(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.Column('request_sha256', sa.String(length=64), nullable=True),
    sa.Column('reserved_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('actual_monthly_delta_usd', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('drift_usd', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('allocation_consumed_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('allocation_released_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('credit_consumed_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('credit_released_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('credit_settlement', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
              nullable=False),
    sa.Column('notes', sa.String(length=1000), nullable=True),
    sa.Column('actor', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'],
                            name=op.f('fk_reservation_reconciliations_decision_id_decisions')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'],
                            name=op.f('fk_reservation_reconciliations_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservation_reconciliations'))
    )
    with op.batch_alter_table('reservation_reconciliations', schema=None) as batch_op:
        batch_op.create_index('ix_reservation_reconciliations_decision', ['tenant_id', 'decision_id'], unique=True)
        batch_op.create_index('ix_reservation_reconciliations_status', ['tenant_id', 'status', 'created_at'],
                              unique=False)

    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_reservation_age', ['created_at'], unique=False,
                              postgresql_where=sa.text('reservation_active'),
                              sqlite_where=sa.text('reservation_active'))



def downgrade() -> None:
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_reservation_age')

    with op.batch_alter_table('reservation_reconciliations', schema=None) as batch_op:
        batch_op.drop_index('ix_reservation_reconciliations_status')
        batch_op.drop_index('ix_reservation_reconciliations_decision')

    op.drop_table('reservation_reconciliations')
    with op.batch_alter_table('cost_records', schema=None) as batch_op:
        batch_op.drop_index('ix_cost_records_tenant_date')
        batch_op.drop_index('ix_cost_records_scope_date')
        batch_op.drop_index('ix_cost_records_identity')

    op.drop_table('cost_records')
    op.drop_table('job_leases')
