"""Tenants, principals and API keys: creation, lookup and authentication."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, exists, select
from sqlalchemy.orm import Session

from valdrix.auth.models import ApiKey, Principal, Tenant
from valdrix.db import Statement
from valdrix.errors import Conflict, InvalidInput, NotFound
from valdrix.policies import service as policies
from valdrix.policies.schemas import PolicyDocument

ROLES = {"member": 10, "admin": 50, "owner": 100}
PERMISSIONS = ("approve:prod", "approve:nonprod")
KEY_PREFIX = "vxk_"


@dataclass(frozen=True)
class Caller:
    """The authenticated principal a request acts as."""

    tenant_id: uuid.UUID
    principal_id: uuid.UUID
    name: str
    role: str
    permissions: frozenset[str]
    key_hash: str | None = None  # the API key it authenticated with; None for certificate or cluster callers

    def has_role(self, role: str) -> bool:
        """Return whether the caller's role is at least `role`."""
        return ROLES[self.role] >= ROLES[role]


def hash_key(key: str) -> str:
    """Return the stored form of an API key (SHA-256; keys are 256-bit random, so no slow hash is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# Built once: every authenticated request runs it.
_BY_KEY_HASH = Statement(
    select(Principal.id, Principal.tenant_id, Principal.name, Principal.role, Principal.permissions)
    .join(ApiKey, ApiKey.principal_id == Principal.id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None)))


def authenticate(session: Session, key: str) -> Caller | None:
    """Return the caller owning an unrevoked key, or None."""
    return _owner(session, hash_key(key))


def by_key_hash(session: Session, digest: str) -> Caller | None:
    """Return the caller owning the unrevoked key with this stored hash, or None (a console session's key)."""
    return _owner(session, digest)


def _owner(session: Session, digest: str) -> Caller | None:
    rows = _BY_KEY_HASH.run(session, {"key_hash": digest})
    if not rows:
        return None
    row = rows[0]
    return Caller(tenant_id=row.tenant_id, principal_id=row.id, name=row.name, role=row.role,
                  permissions=frozenset(row.permissions), key_hash=digest)


def key_unrevoked() -> ColumnElement[bool]:
    """Return an expression true when the API key bound as `:key_hash` exists and is not revoked."""
    return exists().where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))


class KeyOwners:
    """The callers of API keys a worker has authenticated before, by key hash (at most `size` of them).

    A key never changes principal, and a principal never changes tenant, role or permissions, so an entry
    never goes stale: only revocation changes a key. Whoever acts on a remembered caller must therefore
    re-check the key in the database in the same transaction, as the gate does in its first statement
    (`key_unrevoked`), so a revocation takes effect at once on every replica. No plaintext key is kept.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._callers: dict[str, Caller] = {}

    def caller(self, session: Session, key: str) -> Caller | None:
        """Return the remembered caller of `key`, else authenticate it in `session` (None: unknown or revoked)."""
        digest = hash_key(key)
        known = self._callers.get(digest)
        if known is not None:
            return known
        caller = _owner(session, digest)
        if caller is not None:
            if len(self._callers) >= self.size:
                self._callers.clear()
            self._callers[digest] = caller
        return caller

    def known(self, key: str) -> Caller | None:
        """Return the remembered caller of `key` without asking the database (None: not seen here)."""
        return self._callers.get(hash_key(key))

    def forget(self, key: str) -> None:
        """Drop what is remembered about `key` (it was found revoked)."""
        self._callers.pop(hash_key(key), None)


def create_tenant(session: Session, name: str, *, now: datetime) -> Tenant:
    """Create a tenant with the default policy as version 1; raise Conflict if the name is taken."""
    name = name.strip()
    if not name:
        raise InvalidInput("tenant name must not be empty", code="invalid_tenant_name")
    if session.scalars(select(Tenant).where(Tenant.name == name)).first() is not None:
        raise Conflict(f"tenant {name!r} already exists", code="tenant_exists")
    tenant = Tenant(id=uuid.uuid4(), name=name, created_at=now)
    session.add(tenant)
    session.flush()
    policies.put(session, tenant.id, PolicyDocument(), actor=None, now=now)
    return tenant


def get_tenant(session: Session, name_or_id: str) -> Tenant:
    """Return a tenant by name or id; raise NotFound otherwise."""
    try:
        query = select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == uuid.UUID(name_or_id)))
    except ValueError:
        query = select(Tenant).where(Tenant.name == name_or_id)
    tenant = session.scalars(query).first()
    if tenant is None:
        raise NotFound(f"tenant {name_or_id!r} not found", code="tenant_not_found")
    return tenant


def ensure_principal(session: Session, tenant_id: uuid.UUID, name: str, *, role: str, permissions: list[str],
                     now: datetime) -> Principal:
    """Return the tenant's principal of that name, creating it with `role` and `permissions` if absent."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {sorted(ROLES)}", code="invalid_role")
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown:
        raise InvalidInput(f"unknown permissions {sorted(unknown)}", code="invalid_permission")
    principal = session.scalars(select(Principal).where(Principal.tenant_id == tenant_id,
                                                        Principal.name == name)).first()
    if principal is None:
        principal = Principal(id=uuid.uuid4(), tenant_id=tenant_id, name=name, role=role,
                              permissions=sorted(set(permissions)), created_at=now)
        session.add(principal)
        session.flush()
    return principal


def issue_key(session: Session, principal: Principal, *, now: datetime) -> tuple[ApiKey, str]:
    """Create an API key for `principal`; return the row and the plaintext key (shown once, never stored)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=uuid.uuid4(), tenant_id=principal.tenant_id, principal_id=principal.id,
                 prefix=plaintext[:12], key_hash=hash_key(plaintext), created_at=now, revoked_at=None)
    session.add(row)
    session.flush()
    return row, plaintext


def list_keys(session: Session, tenant_id: uuid.UUID) -> list[tuple[ApiKey, Principal]]:
    """Return the tenant's keys with their principals, oldest first."""
    rows = session.execute(select(ApiKey, Principal).join(Principal, ApiKey.principal_id == Principal.id)
                           .where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)).all()
    return [(row[0], row[1]) for row in rows]


def revoke_key(session: Session, key_id: uuid.UUID, *, now: datetime) -> ApiKey:
    """Revoke a key by id; raise NotFound if no such key exists."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("api key not found", code="api_key_not_found")
    if row.revoked_at is None:
        row.revoked_at = now
    return row


def bootstrap(session: Session, tenant_name: str, *, now: datetime) -> str | None:
    """On an empty database create the default tenant and an owner key; return the key, or None if not empty."""
    if session.scalars(select(Tenant.id).limit(1)).first() is not None:
        return None
    tenant = create_tenant(session, tenant_name, now=now)
    owner = ensure_principal(session, tenant.id, "bootstrap-owner", role="owner", permissions=list(PERMISSIONS),
                             now=now)
    return issue_key(session, owner, now=now)[1]
