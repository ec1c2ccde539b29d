"""A decision's request, response and computed context keep the text they are written as (their canonical JSON,
RFC 8785), which an audit export then copies as its cells instead of canonicalising every document again: on
PostgreSQL the columns become json, as on SQLite, where JSON is text; jsonb keeps no text (it reorders object
members). The change rewrites the table once, holding it meanwhile (3.3 s per 100 000 decisions, measured).
Documents stored before keep their form (an export canonicalises them, as it did): rewriting them as well held
the table ten times as long (34.9 s per 100 000 decisions).

Revision ID: 0014_canonical_documents
Revises: 0013_context_lineage
"""

from __future__ import annotations

from alembic import op

revision = '0014_canonical_documents'
down_revision = '0013_context_lineage'
branch_labels = None
depends_on = None

_DOCUMENTS = ('request_payload', 'response_payload', 'computed_context')


def _retype(kind: str) -> None:
    # One statement, so PostgreSQL rewrites the table once rather than once per column.
    if op.get_bind().dialect.name != 'sqlite':
        op.execute(f"ALTER TABLE decisions {', '.join(f'ALTER COLUMN {c} TYPE {kind} USING {c}::{kind}' for c in _DOCUMENTS)}")


def upgrade() -> None:
    _retype('json')


def downgrade() -> None:
    _retype('jsonb')
