"""Notifications (targets, the event outbox, deliveries, budget threshold notices), revocable approvals and
console sessions.

Revision ID: 0008_notifications
Revises: 0006_settlement_check_rounded
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008_notifications'
down_revision = '0006_settlement_check_rounded'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
STATUS = 'ck_approval_requests_status_known'


def upgrade() -> None:
    op.create_table('notification_targets',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('event_types', JSON, nullable=False),
    sa.Column('project_ids', JSON, nullable=False),
    sa.Column('environments', JSON, nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('webhook', 'slack')", name=op.f('ck_notification_targets_kind_known')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_notification_targets_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_targets')))
    op.create_index('ix_notification_targets_tenant', 'notification_targets', ['tenant_id', 'created_at'])
    op.create_table('notification_events',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=128), nullable=True),
    sa.Column('environment', sa.String(length=32), nullable=True),
    sa.Column('target_id', sa.Uuid(), nullable=True),
    sa.Column('payload', JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_notification_events_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_events')))
    op.create_index('ix_notification_events_undispatched', 'notification_events', ['dispatched_at', 'created_at'])
    op.create_table('notification_deliveries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('event_id', sa.Uuid(), nullable=False),
    sa.Column('target_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_holder', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')",
                       name=op.f('ck_notification_deliveries_status_known')),
    sa.ForeignKeyConstraint(['event_id'], ['notification_events.id'],
                            name=op.f('fk_notification_deliveries_event_id_notification_events')),
    sa.ForeignKeyConstraint(['target_id'], ['notification_targets.id'],
                            name=op.f('fk_notification_deliveries_target_id_notification_targets')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_notification_deliveries_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deliveries')),
    sa.UniqueConstraint('event_id', 'target_id', name=op.f('uq_notification_deliveries_event_id')))
    op.create_index('ix_notification_deliveries_due', 'notification_deliveries', ['status', 'next_attempt_at'])
    op.create_index('ix_notification_deliveries_tenant', 'notification_deliveries', ['tenant_id', 'created_at'])
    op.create_table('budget_threshold_notices',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('scope_key', sa.String(length=128), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('percent', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_budget_threshold_notices_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budget_threshold_notices')),
    sa.UniqueConstraint('tenant_id', 'scope_key', 'month', 'percent',
                        name=op.f('uq_budget_threshold_notices_tenant_id')))
    op.create_table('console_sessions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('principal_id', sa.Uuid(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_console_sessions_tenant_id_tenants')),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_console_sessions_principal_id_principals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_console_sessions_token_hash')))
    op.create_index('ix_approval_requests_tenant_created', 'approval_requests', ['tenant_id', 'created_at'])
    op.create_index('ix_decisions_tenant_project_created', 'decisions', ['tenant_id', 'project_id', 'created_at'])
    with op.batch_alter_table('approval_requests') as batch_op:
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint(op.f(STATUS), type_='check')
        batch_op.create_check_constraint(op.f(STATUS), "status IN ('pending', 'approved', 'denied', 'expired', "
                                                       "'revoked')")


def downgrade() -> None:
    with op.batch_alter_table('approval_requests') as batch_op:
        batch_op.drop_constraint(op.f(STATUS), type_='check')
        batch_op.create_check_constraint(op.f(STATUS), "status IN ('pending', 'approved', 'denied', 'expired')")
        batch_op.drop_column('revoked_at')
    op.drop_index('ix_decisions_tenant_project_created', table_name='decisions')
    op.drop_index('ix_approval_requests_tenant_created', table_name='approval_requests')
    op.drop_table('console_sessions')
    op.drop_table('budget_threshold_notices')
    op.drop_table('notification_deliveries')
    op.drop_table('notification_events')
    op.drop_table('notification_targets')
