"""Request-scoped dependencies shared by every router: the transaction, the caller, the clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from valdrix.approvals.tokens import KeyRing
from valdrix.auth.service import Caller, KeyOwners, authenticate
from valdrix.clock import Clock, IdFactory
from valdrix.config import Settings
from valdrix.db import transaction
from valdrix.errors import Forbidden, Unauthenticated, Unavailable
from valdrix.gatepool import pass_turn

T = TypeVar("T")


def get_session(request: Request) -> Iterator[Session]:
    """Yield the request's one transaction: committed after the handler returns, rolled back if it raises."""
    with transaction(request.app.state.sessions) as session:
        yield session


# scope="function" closes the transaction before the response is sent: a client never sees an
# answer whose decision was not committed.
DB = Annotated[Session, Depends(get_session, scope="function")]


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_ids(request: Request) -> IdFactory:
    ids: IdFactory = request.app.state.ids
    return ids


def get_keyring(request: Request) -> KeyRing:
    """Return the app's signing key ring; raise Unavailable (503) when no signing keys are configured."""
    keyring: KeyRing | None = request.app.state.keyring
    if keyring is None:
        raise Unavailable("no signing keys are configured (VALDRIX_SIGNING_KEYS_DIR)", code="signing_keys_unavailable")
    return keyring


SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
ClockDep = Annotated[Clock, Depends(get_clock)]
IdsDep = Annotated[IdFactory, Depends(get_ids)]


def bearer_token(request: Request) -> str | None:
    """Return the bearer token of the Authorization header, or None when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticated(db: Session, token: str | None, owners: KeyOwners | None = None) -> Caller:
    """Return the caller owning `token`, from `owners` if given; raise Unauthenticated for a bad or missing key."""
    if token is None:
        raise Unauthenticated("missing bearer API key", code="missing_credentials")
    caller = owners.caller(db, token) if owners is not None else authenticate(db, token)
    if caller is None:
        raise Unauthenticated("unknown or revoked API key", code="invalid_credentials")
    return caller


def authorised(caller: Caller, role: str) -> Caller:
    """Return `caller` if it holds at least `role`; raise Forbidden otherwise."""
    if not caller.has_role(role):
        raise Forbidden(f"role {role!r} or higher required (caller is {caller.role!r})",
                        code="insufficient_role", required_role=role)
    return caller


def current_caller(request: Request, db: DB) -> Caller:
    """Return the authenticated caller of the request."""
    return authenticated(db, bearer_token(request))


def require(role: str) -> Callable[[Caller], Awaitable[Caller]]:
    """Return a dependency that admits callers holding at least `role`, else raises Forbidden."""

    async def check(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        return authorised(caller, role)

    return check


async def in_gate_transaction(request: Request, work: Callable[[Session, Caller], T]) -> T:
    """Return `work(db, caller)` run with authentication, the work and the commit in one gate-pool thread.

    The latency-critical gate routes use this instead of the `DB` dependency: with the dependency the commit
    runs in a separate thread-pool hop after the handler, and under load the row locks a decision holds
    would stay held while that hop waits for a thread. The caller of a key seen before comes from the worker's
    `KeyOwners` without a round trip: `work` must be a gate decision, whose first statement re-checks the key
    (`GateContext.api_key_hash`) and raises Unauthenticated if it was revoked.
    """
    token = bearer_token(request)
    owners: KeyOwners = request.app.state.key_owners

    def unit() -> T:
        try:
            with transaction(request.app.state.sessions) as db:
                result = work(db, authorised(authenticated(db, token, owners), "member"))
                pass_turn()  # what is left, the commit, waits for the database
                return result
        except Unauthenticated:
            if token is not None:
                owners.forget(token)
            raise

    return await asyncio.get_running_loop().run_in_executor(request.app.state.gate_executor, unit)


Member = Annotated[Caller, Depends(require("member"))]
Admin = Annotated[Caller, Depends(require("admin"))]
Owner = Annotated[Caller, Depends(require("owner"))]
