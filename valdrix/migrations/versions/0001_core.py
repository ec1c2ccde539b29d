"""Core tables: tenants, keys, policies, budgets, credits, decisions, and the append-only ledger.

Revision ID: 0001_core
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001_core'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenants',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name'))
    )
    op.create_table('budgets',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('scope_key', sa.String(length=128), nullable=False),
    sa.Column('monthly_limit_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('reserved_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('monthly_limit_usd >= 0', name=op.f('ck_budgets_limit_non_negative')),
    sa.CheckConstraint('reserved_usd >= 0', name=op.f('ck_budgets_reserved_non_negative')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_budgets_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets'))
    )
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.create_index('ix_budgets_tenant_scope', ['tenant_id', 'scope_key'], unique=True)

    op.create_table('credit_grants',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('pool', sa.String(length=16), nullable=False),
    sa.Column('scope_key', sa.String(length=128), nullable=False),
    sa.Column('total_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('remaining_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('remaining_usd >= 0 AND remaining_usd <= total_usd', name=op.f('ck_credit_grants_remaining_in_range')),
    sa.CheckConstraint('total_usd > 0', name=op.f('ck_credit_grants_total_positive')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_credit_grants_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_grants'))
    )
    with op.batch_alter_table('credit_grants', schema=None) as batch_op:
        batch_op.create_index('ix_credit_grants_lookup', ['tenant_id', 'pool', 'active'], unique=False)

    op.create_table('decisions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('environment', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=128), nullable=False),
    sa.Column('resource_reference', sa.String(length=512), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('reason_codes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('fail_safe', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=False),
    sa.Column('policy_sha256', sa.String(length=64), nullable=False),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=160), nullable=False),
    sa.Column('estimated_monthly_delta_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('estimated_hourly_delta_usd', sa.Numeric(precision=18, scale=6), nullable=False),
    sa.Column('budget_scope', sa.String(length=128), nullable=True),
    sa.Column('reserved_allocation_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('reserved_credit_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('reservation_active', sa.Boolean(), nullable=False),
    sa.Column('approval_request_id', sa.Uuid(), nullable=True),
    sa.Column('request_payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('response_payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('computed_context', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('estimated_hourly_delta_usd >= 0', name=op.f('ck_decisions_hourly_non_negative')),
    sa.CheckConstraint('estimated_monthly_delta_usd >= 0', name=op.f('ck_decisions_monthly_non_negative')),
    sa.CheckConstraint('reserved_allocation_usd >= 0 AND reserved_credit_usd >= 0', name=op.f('ck_decisions_reserved_non_negative')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_decisions_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions'))
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_active_reservations', ['tenant_id', 'reservation_active', 'created_at'], unique=False)
        batch_op.create_index('ix_decisions_idempotency', ['tenant_id', 'source', 'idempotency_key'], unique=True)
        batch_op.create_index(batch_op.f('ix_decisions_request_fingerprint'), ['request_fingerprint'], unique=False)
        batch_op.create_index('ix_decisions_tenant_created', ['tenant_id', 'created_at'], unique=False)

    op.create_table('policy_versions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('schema_version', sa.String(length=64), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_policy_versions_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_versions'))
    )
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.create_index('ix_policy_versions_tenant_version', ['tenant_id', 'version'], unique=True)

    op.create_table('principals',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('permissions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_principals_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_principals'))
    )
    with op.batch_alter_table('principals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_principals_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index('ix_principals_tenant_name', ['tenant_id', 'name'], unique=True)

    op.create_table('api_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('principal_id', sa.Uuid(), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_api_keys_principal_id_principals')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_principal_id'), ['principal_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_keys_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('credit_reservations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('decision_id', sa.Uuid(), nullable=False),
    sa.Column('grant_id', sa.Uuid(), nullable=False),
    sa.Column('pool', sa.String(length=16), nullable=False),
    sa.Column('reserved_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('consumed_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('released_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('consumed_usd + released_usd <= reserved_usd', name=op.f('ck_credit_reservations_settled_within_reserved')),
    sa.CheckConstraint('reserved_usd > 0', name=op.f('ck_credit_reservations_reserved_positive')),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_credit_reservations_decision_id_decisions')),
    sa.ForeignKeyConstraint(['grant_id'], ['credit_grants.id'], name=op.f('fk_credit_reservations_grant_id_credit_grants')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_credit_reservations_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_reservations'))
    )
    with op.batch_alter_table('credit_reservations', schema=None) as batch_op:
        batch_op.create_index('ix_credit_reservations_decision', ['decision_id'], unique=False)

    op.create_table('decision_ledger',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('decision_id', sa.Uuid(), nullable=False),
    sa.Column('event', sa.String(length=48), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('environment', sa.String(length=32), nullable=False),
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('reason_codes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=False),
    sa.Column('policy_sha256', sa.String(length=64), nullable=False),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('estimated_monthly_delta_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('estimated_hourly_delta_usd', sa.Numeric(precision=18, scale=6), nullable=False),
    sa.Column('reserved_total_usd', sa.Numeric(precision=18, scale=4), nullable=False),
    sa.Column('reservation_active', sa.Boolean(), nullable=False),
    sa.Column('approval_request_id', sa.Uuid(), nullable=True),
    sa.Column('request_payload_sha256', sa.String(length=64), nullable=False),
    sa.Column('response_payload_sha256', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('actor', sa.Uuid(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_decision_ledger_decision_id_decisions')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_decision_ledger_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_decision_ledger')),
    sa.UniqueConstraint('id', name=op.f('uq_decision_ledger_id'))
    )
    with op.batch_alter_table('decision_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_decision_ledger_decision', ['decision_id'], unique=False)
        batch_op.create_index('ix_decision_ledger_tenant_recorded', ['tenant_id', 'recorded_at', 'seq'], unique=False)

    _ledger_immutable()


LEDGER_GUARD = "decision_ledger is append-only: {op} is refused"


def _ledger_immutable() -> None:
    """Refuse UPDATE and DELETE on the ledger in the database itself, whoever connects."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION valdrix_ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'decision_ledger is append-only: % is refused', TG_OP; END $$"
        )
        op.execute("CREATE TRIGGER tr_decision_ledger_immutable BEFORE UPDATE OR DELETE ON decision_ledger "
                   "FOR EACH ROW EXECUTE FUNCTION valdrix_ledger_immutable()")
        op.execute("CREATE TRIGGER tr_decision_ledger_no_truncate BEFORE TRUNCATE ON decision_ledger "
                   "FOR EACH STATEMENT EXECUTE FUNCTION valdrix_ledger_immutable()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER tr_decision_ledger_no_{verb.lower()} BEFORE {verb} ON decision_ledger "
                       f"BEGIN SELECT RAISE(ABORT, '{LEDGER_GUARD.format(op=verb)}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tr_decision_ledger_immutable ON decision_ledger")
        op.execute("DROP TRIGGER IF EXISTS tr_decision_ledger_no_truncate ON decision_ledger")
        op.execute("DROP FUNCTION IF EXISTS valdrix_ledger_immutable()")
    with op.batch_alter_table('decision_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_decision_ledger_tenant_recorded')
        batch_op.drop_index('ix_decision_ledger_decision')

    op.drop_table('decision_ledger')
    with op.batch_alter_table('credit_reservations', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_reservations_decision')

    op.drop_table('credit_reservations')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_api_keys_principal_id'))

    op.drop_table('api_keys')
    with op.batch_alter_table('principals', schema=None) as batch_op:
        batch_op.drop_index('ix_principals_tenant_name')
        batch_op.drop_index(batch_op.f('ix_principals_tenant_id'))

    op.drop_table('principals')
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_policy_versions_tenant_version')

    op.drop_table('policy_versions')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_tenant_created')
        batch_op.drop_index(batch_op.f('ix_decisions_request_fingerprint'))
        batch_op.drop_index('ix_decisions_idempotency')
        batch_op.drop_index('ix_decisions_active_reservations')

    op.drop_table('decisions')
    with op.batch_alter_table('credit_grants', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_grants_lookup')

    op.drop_table('credit_grants')
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.drop_index('ix_budgets_tenant_scope')

    op.drop_table('budgets')
    op.drop_table('tenants')
