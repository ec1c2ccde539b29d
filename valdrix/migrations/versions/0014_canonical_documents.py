"""A decision's request, response and computed context are stored as their canonical JSON text (RFC 8785), which
an audit export copies as its cells instead of canonicalising every document again: on PostgreSQL the columns
become json (jsonb keeps no text: it reorders object members), and the documents stored before are rewritten
in that form (a document RFC 8785 cannot represent keeps its text; an export canonicalises it as before).

Revision ID: 0014_canonical_documents
Revises: 0013_context_lineage
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from valdrix.canonical import canonical_json_of_text

revision = '0014_canonical_documents'
down_revision = '0013_context_lineage'
branch_labels = None
depends_on = None

_BATCH = 5000
_DOCUMENTS = ('request_payload', 'response_payload', 'computed_context')


def upgrade() -> None:
    connection = op.get_bind()
    sqlite = connection.dialect.name == 'sqlite'
    if not sqlite:
        for name in _DOCUMENTS:
            op.alter_column('decisions', name, type_=postgresql.JSON(), existing_type=postgresql.JSONB(),
                            postgresql_using=f'{name}::json')
    decisions = sa.table('decisions', sa.column('id', sa.Uuid()), *(sa.column(name, sa.Text()) for name in _DOCUMENTS))
    bound = sa.bindparam if sqlite else (lambda key: sa.cast(sa.bindparam(key, type_=sa.Text()), postgresql.JSON()))
    update = decisions.update().where(decisions.c.id == sa.bindparam('key')).values(
        {name: bound(f'new_{name}') for name in _DOCUMENTS})
    # Keyset pages by id: each page is read whole before its rows are updated on this connection.
    last = None
    while True:
        page = sa.select(decisions.c.id, *(sa.cast(decisions.c[name], sa.Text()) for name in _DOCUMENTS)).order_by(
            decisions.c.id)
        batch = connection.execute((page if last is None else page.where(decisions.c.id > last)).limit(_BATCH)).all()
        if not batch:
            break
        values = []
        for key, *stored in batch:
            texts = [_canonical(text) for text in stored]
            if texts != stored:
                values.append({'key': key, **{f'new_{name}': text for name, text in zip(_DOCUMENTS, texts, strict=True)}})
        if values:
            connection.execute(update, values)
        last = batch[-1][0]


def _canonical(stored: str) -> str:
    try:
        return canonical_json_of_text(stored)
    except ValueError:
        return stored


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        for name in _DOCUMENTS:
            op.alter_column('decisions', name, type_=postgresql.JSONB(astext_type=sa.Text()),
                            existing_type=postgresql.JSON(), postgresql_using=f'{name}::jsonb')
