"""A settled credit reservation is checked on its split rounded to cents' hundredths, as the columns hold it.

SQLite keeps NUMERIC values as binary floating point: an exact split such as 2.2316 + 10.114 of 12.3456 adds up
to 12.345600000000001 there and failed the check. On PostgreSQL (exact numerics) the check is unchanged in effect.

Revision ID: 0006_settlement_check_rounded
Revises: 0005_idempotency_key_first
"""

from __future__ import annotations

from alembic import op

revision = '0006_settlement_check_rounded'
down_revision = '0005_idempotency_key_first'
branch_labels = None
depends_on = None

NAME = 'ck_credit_reservations_settled_within_reserved'


def upgrade() -> None:
    with op.batch_alter_table('credit_reservations') as batch_op:
        batch_op.drop_constraint(op.f(NAME), type_='check')
        batch_op.create_check_constraint(op.f(NAME), 'round(consumed_usd + released_usd, 4) <= reserved_usd')


def downgrade() -> None:
    with op.batch_alter_table('credit_reservations') as batch_op:
        batch_op.drop_constraint(op.f(NAME), type_='check')
        batch_op.create_check_constraint(op.f(NAME), 'consumed_usd + released_usd <= reserved_usd')
