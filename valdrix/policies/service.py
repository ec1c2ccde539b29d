"""Reading and versioning tenant policies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, select
from sqlalchemy.orm import Session

from valdrix.db import Statement
from valdrix.errors import NotFound
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import SCHEMA_VERSION, PolicyDocument


@dataclass(frozen=True)
class ActivePolicy:
    """The policy in force: its version number, hash and validated document."""

    version: int
    sha256: str
    document: PolicyDocument


# Validated documents by content hash. A hash names exactly one document, so entries never go stale and
# replicas cannot disagree; the cap only bounds memory.
_PARSED: dict[str, PolicyDocument] = {}
_PARSED_MAX = 1024


def latest_query(*extra: ColumnElement[Any]) -> Select[Any]:
    """Return a statement reading the newest version of tenant `:tenant_id` with `extra` columns alongside.

    Callers build it once: the gate reads the policy and its replay check in one round trip. The document
    itself is not read: `active` parses it once per SHA-256 and reuses it.
    """
    return (select(PolicyVersion.version, PolicyVersion.sha256, *extra)
            .where(PolicyVersion.tenant_id == bindparam("tenant_id"))
            .order_by(PolicyVersion.version.desc()).limit(1))


_DOCUMENT = Statement(select(PolicyVersion.document).where(PolicyVersion.tenant_id == bindparam("tenant_id"),
                                                           PolicyVersion.version == bindparam("version")))


def active(session: Session, tenant_id: uuid.UUID, row: Any) -> ActivePolicy:
    """Return the policy of a `latest_query` row (None: no row); raise NotFound if the tenant has no policy."""
    if row is None:
        raise NotFound("tenant has no policy", code="policy_not_found")
    document = _PARSED.get(row.sha256)
    if document is None:
        stored = _DOCUMENT.run(session, {"tenant_id": tenant_id, "version": row.version})
        document = PolicyDocument.model_validate(stored[0].document)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[row.sha256] = document
    return ActivePolicy(version=row.version, sha256=row.sha256, document=document)


_CURRENT = Statement(latest_query())


def current(session: Session, tenant_id: uuid.UUID) -> ActivePolicy:
    """Return the tenant's newest policy version (every tenant is created with version 1)."""
    rows = _CURRENT.run(session, {"tenant_id": tenant_id})
    return active(session, tenant_id, rows[0] if rows else None)


def put(session: Session, tenant_id: uuid.UUID, document: PolicyDocument, *, actor: uuid.UUID | None,
        now: datetime) -> tuple[PolicyVersion, bool]:
    """Store `document` as a new version unless it equals the current one; return (version, changed)."""
    latest = session.scalars(select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id)
                             .order_by(PolicyVersion.version.desc()).limit(1)).first()
    digest = document.sha256()
    if latest is not None and digest == latest.sha256:
        return latest, False
    row = PolicyVersion(id=uuid.uuid4(), tenant_id=tenant_id, version=(latest.version if latest else 0) + 1,
                        schema_version=SCHEMA_VERSION, document=document.canonical(), sha256=digest,
                        created_by=actor, created_at=now)
    session.add(row)
    session.flush()  # surfaces a concurrent writer of the same version as a unique violation now
    return row, True


def get_version(session: Session, tenant_id: uuid.UUID, version: int) -> PolicyVersion:
    """Return one stored version; raise NotFound if the tenant has no such version."""
    row = session.scalars(select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id,
                                                      PolicyVersion.version == version)).first()
    if row is None:
        raise NotFound(f"policy version {version} not found", code="policy_version_not_found")
    return row


def history(session: Session, tenant_id: uuid.UUID) -> list[PolicyVersion]:
    """Return every stored version, newest first."""
    return list(session.scalars(select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id)
                                .order_by(PolicyVersion.version.desc())))
