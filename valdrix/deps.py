"""Request-scoped dependencies shared by every router: the transaction, the caller, the clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from valdrix.approvals.tokens import KeyRing
from valdrix.auth.service import Caller, authenticate
from valdrix.clock import Clock, IdFactory
from valdrix.config import Settings
from valdrix.errors import Forbidden, Unauthenticated, Unavailable, ValdrixError


def get_session(request: Request) -> Iterator[Session]:
    """Yield the request's one transaction: committed after the handler returns, rolled back if it raises."""
    session: Session = request.app.state.sessions()
    try:
        yield session
        session.commit()
    except ValdrixError as exc:
        if exc.commit:
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function" closes the transaction before the response is sent: a client never sees an
# answer whose decision was not committed.
DB = Annotated[Session, Depends(get_session, scope="function")]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def get_ids(request: Request) -> IdFactory:
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


def current_caller(request: Request, db: DB) -> Caller:
    """Return the authenticated caller; raise Unauthenticated for a missing, unknown or revoked key."""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("missing bearer API key", code="missing_credentials")
    caller = authenticate(db, token)
    if caller is None:
        raise Unauthenticated("unknown or revoked API key", code="invalid_credentials")
    return caller


def require(role: str) -> Callable[[Caller], Caller]:
    """Return a dependency that admits callers holding at least `role`, else raises Forbidden."""

    def check(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if not caller.has_role(role):
            raise Forbidden(f"role {role!r} or higher required (caller is {caller.role!r})",
                            code="insufficient_role", required_role=role)
        return caller

    return check


Member = Annotated[Caller, Depends(require("member"))]
Admin = Annotated[Caller, Depends(require("admin"))]
Owner = Annotated[Caller, Depends(require("owner"))]
