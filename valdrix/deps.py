"""Request-scoped dependencies shared by every router: the transaction, the caller, the clock."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from valdrix.approvals.tokens import KeyRing
from valdrix.auth.service import Caller, KeyOwners, authenticate
from valdrix.clock import Clock, IdFactory
from valdrix.config import Settings
from valdrix.db import LOCK_WAIT_MS, transaction
from valdrix.decisions.service import Outcome, trigger_of
from valdrix.errors import Forbidden, Unauthenticated, Unavailable
from valdrix.gatepool import pass_turn

T = TypeVar("T")


def get_session(request: Request) -> Iterator[Session]:
    """Yield a read-only session; on a `WritingRoute` the handler gets its own transaction in its place."""
    with transaction(request.app.state.reads) as session:
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


def current_caller(request: Request) -> Caller:
    """Return the authenticated caller of the request, read in a transaction of its own."""
    with transaction(request.app.state.reads) as db:
        return authenticated(db, bearer_token(request))


def require(role: str) -> Callable[[Caller], Awaitable[Caller]]:
    """Return a dependency that admits callers holding at least `role`, else raises Forbidden."""

    async def check(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        return authorised(caller, role)

    return check


class Abandoned(Exception):
    """The caller was already answered without this unit's result: the unit must not commit."""


class Claim:
    """Who answers a gate request: its unit, when it reaches its commit in time, or else the deadline.

    The lock guards one comparison and one assignment; nothing waits while holding it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None
        self.overtaken = False  # the unit claimed it, but its commit outlasted the grace: the deadline answered

    def take(self, owner: str) -> bool:
        """Return whether `owner` answers: the first to ask does."""
        with self._lock:
            if self._owner is None:
                self._owner = owner
            return self._owner == owner


# How long an answer that has reached its commit when the deadline passes may still take (a WAL commit takes
# well under a millisecond); past it the caller gets the unrecorded answer. Within the +100 ms the gate allows.
COMMIT_GRACE_SECONDS = 0.05


# Of the time left when a unit starts, the share its evaluation may use: the rest is for recording the
# fail-safe decision should the evaluation run out of time.
EVALUATION_SHARE = 0.8


async def in_gate_unit(request: Request, authenticate: Callable[[Session], Caller],
                       work: Callable[[Session, Caller, float], tuple[T, Outcome | None]],
                       unrecorded: Callable[[Caller | None, str], T], *, known: Caller | None, started: float,
                       deadline: float, forget: Callable[[], None] = lambda: None) -> T:
    """Return the answer of a gate request by `deadline` seconds after `started`, whatever the database does.

    The unit (authentication, `work(db, caller, seconds_left)` and the commit) runs on the app's write
    executor in one transaction: every lock it takes is released before its thread is free again. When the
    database refuses (down, locked past the deadline, a fail-safe decision that cannot be written) or the
    deadline passes first, the answer is `unrecorded(caller, trigger)`: the mode's fail-safe answer without a
    record, for the caller as far as it is known (`known` beforehand, or as the unit authenticated it).
    A unit still queued or waiting then rolls back instead of committing (`Claim`), so the caller never gets
    one answer while another is recorded, and every answer is counted once: `Outcome.observe` after the
    commit, or `unrecorded`. `forget` runs when the credential is found unknown or revoked.
    """
    state = request.app.state
    claim = Claim()
    seen = [known]
    sqlite = state.settings.is_sqlite

    def unit() -> T:
        left = deadline - (time.monotonic() - started)
        if left <= 0:
            raise Abandoned()
        factory: sessionmaker[Session] = state.sessions
        sessions: Callable[[], Session] = factory
        if sqlite:  # the write lock is waited for only while a decision can still be made and recorded
            wait_ms = int(left * EVALUATION_SHARE * 1000)
            sessions = partial(factory, bind=state.engine.execution_options(**{LOCK_WAIT_MS: wait_ms}))
        try:
            with transaction(sessions) as db:
                caller = seen[0] = authenticate(db)
                result, outcome = work(db, caller, left * EVALUATION_SHARE)
                pass_turn()  # what is left, the commit, waits for the database
                if not claim.take("unit"):
                    raise Abandoned()
        except Unauthenticated:
            forget()
            raise
        if outcome is not None and not claim.overtaken:
            outcome.observe()
        return result

    work_done = asyncio.get_running_loop().run_in_executor(state.write_executor, unit)
    # Whatever the unit does after the caller was answered is consumed here, not logged as never retrieved.
    work_done.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        return await asyncio.wait_for(asyncio.shield(work_done),
                                      max(0.0, deadline - (time.monotonic() - started)))
    except TimeoutError:
        if not claim.take("deadline"):
            try:  # the unit is committing: its answer is a moment away
                return await asyncio.wait_for(asyncio.shield(work_done), COMMIT_GRACE_SECONDS)
            except (TimeoutError, SQLAlchemyError, Abandoned):
                # Whether the commit lands is unknown; a retry with the same key returns what it recorded.
                claim.overtaken = True
        return unrecorded(seen[0], "gate_timeout")
    except Abandoned:
        return unrecorded(seen[0], "gate_timeout")
    except SQLAlchemyError as exc:
        return unrecorded(seen[0], trigger_of(exc))
    except Unavailable as exc:
        if exc.code != "gate_unavailable":
            raise
        return unrecorded(seen[0], trigger_of(exc.__cause__ or exc))


def api_key_caller(request: Request) -> tuple[Callable[[Session], Caller], Caller | None, Callable[[], None]]:
    """Return how a gate route authenticates its bearer key in the unit, whom it is known to be, and how to
    forget it.

    The caller of a key seen before comes from the worker's `KeyOwners` without a round trip: the unit's work
    must be a gate decision, whose first statement re-checks the key (`GateContext.api_key_hash`) and raises
    Unauthenticated if it was revoked.
    """
    token = bearer_token(request)
    owners: KeyOwners = request.app.state.key_owners

    def authenticate(db: Session) -> Caller:
        return authorised(authenticated(db, token, owners), "member")

    def forget() -> None:
        if token is not None:
            owners.forget(token)

    return authenticate, owners.known(token) if token is not None else None, forget


Member = Annotated[Caller, Depends(require("member"))]
Admin = Annotated[Caller, Depends(require("admin"))]
Owner = Annotated[Caller, Depends(require("owner"))]


# Marks a `DB` parameter whose handler writes although its route is a GET (it expires what it finds due).
WRITES = object()
WriteDB = Annotated[Session, Depends(get_session, scope="function"), WRITES]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WritingRoute(APIRoute):
    """A route whose synchronous handler takes its `DB` transaction in the same call on the same thread.

    FastAPI runs a handler and its dependencies in separate thread hops; a transaction kept open across them
    would hold its connection, and after a write its locks, while waiting for a thread or the event loop. So
    the handler gets a transaction of its own, begun and ended around its call: a read (anyio's threads), or,
    when the handler writes, a write run on the app's write executor. A handler writes when its route changes
    state (any method but GET/HEAD/OPTIONS) or it takes a `WriteDB`. On SQLite the write executor has one
    thread, so this process's writes queue in order without a lock, and reads never wait for them.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = set(kwargs.get("methods") or ())
        if not inspect.iscoroutinefunction(endpoint):
            signature = inspect.signature(endpoint, eval_str=True)
            names = [name for name, p in signature.parameters.items() if _is_db(p.annotation)]
            if names:
                marks = signature.parameters[names[0]].annotation.__metadata__
                writes = bool(methods - READ_METHODS) or WRITES in marks
                endpoint = _in_own_transaction(endpoint, signature, names[0], writes=writes)
        super().__init__(path, endpoint, **kwargs)


def _is_db(annotation: Any) -> bool:
    return any(getattr(meta, "dependency", None) is get_session for meta in getattr(annotation, "__metadata__", ()))


def _in_own_transaction(handler: Callable[..., Any], signature: inspect.Signature, db: str, *,
                        writes: bool) -> Callable[..., Any]:
    request = next((n for n, p in signature.parameters.items() if p.annotation is Request), None)
    hidden = request is None

    def unit(app_state: Any, kwargs: dict[str, Any]) -> Any:
        with transaction(app_state.sessions if writes else app_state.reads) as session:
            return handler(**{**kwargs, db: session})

    def state(kwargs: dict[str, Any]) -> Any:
        app_state = kwargs[request or "valdrix_request"].app.state
        if hidden:
            del kwargs["valdrix_request"]
        return app_state

    async def write(**kwargs: Any) -> Any:
        app_state = state(kwargs)
        return await asyncio.get_running_loop().run_in_executor(app_state.write_executor, unit, app_state, kwargs)

    def read(**kwargs: Any) -> Any:
        return unit(state(kwargs), kwargs)

    endpoint: Callable[..., Any] = write if writes else read
    parameters = list(signature.parameters.values())
    if hidden:
        parameters.append(inspect.Parameter("valdrix_request", inspect.Parameter.KEYWORD_ONLY, annotation=Request))
    endpoint.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    endpoint.__name__, endpoint.__doc__ = handler.__name__, handler.__doc__
    endpoint.__module__, endpoint.__qualname__ = handler.__module__, handler.__qualname__
    return endpoint
