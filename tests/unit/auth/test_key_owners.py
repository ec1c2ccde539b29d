"""KeyOwners remembers who a key belongs to, never whether it is still valid: that is re-checked in the database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from valdrix.auth import service as auth
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker
from valdrix.migrate import upgrade

NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)


@pytest.fixture
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path_factory.mktemp('owners') / 'v.db'}"
    upgrade(url)
    eng = make_engine(Settings(database_url=url))
    with make_sessionmaker(eng)() as s:
        yield s
    eng.dispose()


def new_key(session: Session, role: str = "member") -> tuple[uuid.UUID, str]:
    tenant = auth.create_tenant(session, f"t-{uuid.uuid4().hex[:10]}", now=NOW)
    principal = auth.ensure_principal(session, tenant.id, "ci", role=role, permissions=[], now=NOW)
    row, key = auth.issue_key(session, principal, now=NOW)
    return row.id, key


def test_a_remembered_caller_outlives_revocation_until_forgotten(session: Session) -> None:
    owners = auth.KeyOwners()
    key_id, key = new_key(session, role="admin")
    caller = owners.caller(session, key)
    assert caller is not None and caller.role == "admin" and caller.key_hash == auth.hash_key(key)
    auth.revoke_key(session, key_id, now=NOW)
    session.flush()
    assert auth.authenticate(session, key) is None
    # Remembered: whoever uses it must re-check the key (the gate's first statement does).
    assert owners.caller(session, key) == caller
    owners.forget(key)
    assert owners.caller(session, key) is None


def test_unknown_keys_are_not_remembered_and_memory_is_bounded(session: Session) -> None:
    owners = auth.KeyOwners(size=1)
    assert owners.caller(session, "vxk_unknown") is None
    first_id, first = new_key(session)
    assert owners.caller(session, first) is not None
    auth.revoke_key(session, first_id, now=NOW)
    session.flush()
    assert owners.caller(session, first) is not None  # still remembered
    _, second = new_key(session)
    assert owners.caller(session, second) is not None  # full: what was remembered is dropped
    assert owners.caller(session, first) is None


def test_the_unrevoked_check_reads_the_key_as_it_is_now(session: Session) -> None:
    key_id, key = new_key(session)
    check = select(auth.key_unrevoked())
    assert session.scalar(check, {"key_hash": auth.hash_key(key)}) is True
    assert session.scalar(check, {"key_hash": auth.hash_key("vxk_unknown")}) is False
    auth.revoke_key(session, key_id, now=NOW)
    session.flush()
    assert session.scalar(check, {"key_hash": auth.hash_key(key)}) is False
