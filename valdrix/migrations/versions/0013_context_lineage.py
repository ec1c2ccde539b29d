"""Each decision stores its computed-context lineage entry (group and context SHA-256), so parity need not
canonicalise every context of a window again; existing decisions get theirs from their stored context, read as
an export reads it.

Revision ID: 0013_context_lineage
Revises: 0012_audit_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from valdrix.canonical import canonical_json_and_value_of_text
from valdrix.decisions.lineage import context_entry, group_text

revision = '0013_context_lineage'
down_revision = '0012_audit_events'
branch_labels = None
depends_on = None

_BATCH = 5000
_COLUMNS = (('context_lineage_group', sa.Text()), ('computed_context_sha256', sa.String(length=64)))


def upgrade() -> None:
    connection = op.get_bind()
    # SQLite adds a NOT NULL column only with a default, else by rebuilding the table, which the foreign keys
    # into decisions and its partial index make hazardous: there the columns keep a default Valdrix never
    # writes (every decision is written with its entry, and PostgreSQL refuses one without).
    sqlite = connection.dialect.name == 'sqlite'
    for name, kind in _COLUMNS:
        op.add_column('decisions', sa.Column(name, kind, nullable=not sqlite, server_default='' if sqlite else None))
    decisions = sa.table('decisions', sa.column('id', sa.Uuid()), sa.column('computed_context', sa.Text()),
                         sa.column('context_lineage_group', sa.Text()),
                         sa.column('computed_context_sha256', sa.String()))
    update = decisions.update().where(decisions.c.id == sa.bindparam('key')).values(
        context_lineage_group=sa.bindparam('group'), computed_context_sha256=sa.bindparam('digest'))
    # Keyset pages by id: each page is read whole before its rows are updated on this connection.
    last = None
    while True:
        page = sa.select(decisions.c.id, sa.cast(decisions.c.computed_context, sa.Text())).order_by(decisions.c.id)
        batch = connection.execute((page if last is None else page.where(decisions.c.id > last)).limit(_BATCH)).all()
        if not batch:
            break
        values = []
        for key, stored in batch:
            group, digest = context_entry(*canonical_json_and_value_of_text(stored))
            values.append({'key': key, 'group': group_text(group), 'digest': digest})
        connection.execute(update, values)
        last = batch[-1][0]
    if not sqlite:
        for name, kind in _COLUMNS:
            op.alter_column('decisions', name, existing_type=kind, nullable=False)


def downgrade() -> None:
    for name, _ in reversed(_COLUMNS):
        op.drop_column('decisions', name)
