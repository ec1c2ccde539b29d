"""Console sessions (sign-in with an API key, CSRF token, expiry, sign-out) and the data each page shows.

Pages act through the same services as the API, as the signed-in principal, so roles, approve permissions and
separation of duties are exactly the API's.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from valdrix.auth import service as auth
from valdrix.auth.models import Principal
from valdrix.auth.service import Caller
from valdrix.budgets import service as budgets
from valdrix.console.models import ConsoleSession
from valdrix.costs import service as costs
from valdrix.errors import Unauthenticated
from valdrix.ledger.models import LedgerEntry
from valdrix.money import ZERO, monthly

COOKIE = "valdrix_console"


@dataclass(frozen=True)
class Signed:
    caller: Caller
    csrf_token: str
    expires_at: datetime


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def sign_in(session: Session, api_key: str, *, now: datetime, lifetime_seconds: int, session_id: uuid.UUID
            ) -> tuple[str, Signed]:
    """Open a session for the owner of `api_key`; return the cookie value (shown to the browser only) and it.

    Raise Unauthenticated for an unknown or revoked key.
    """
    caller = auth.authenticate(session, api_key.strip())
    if caller is None or caller.key_hash is None:
        raise Unauthenticated("unknown or revoked API key", code="invalid_credentials")
    cookie = secrets.token_urlsafe(32)
    row = ConsoleSession(id=session_id, token_hash=_digest(cookie), tenant_id=caller.tenant_id,
                         principal_id=caller.principal_id, key_hash=caller.key_hash,
                         csrf_token=secrets.token_urlsafe(32), created_at=now,
                         expires_at=now + timedelta(seconds=lifetime_seconds), revoked_at=None)
    session.add(row)
    return cookie, Signed(caller, row.csrf_token, row.expires_at)


def current(session: Session, cookie: str | None, *, now: datetime) -> Signed | None:
    """Return the signed-in caller of a cookie, or None when it is unknown, expired, signed out, or its key was
    revoked."""
    if not cookie:
        return None
    row = session.scalars(select(ConsoleSession).where(ConsoleSession.token_hash == _digest(cookie))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    caller = auth.by_key_hash(session, row.key_hash)
    if caller is None:
        return None
    return Signed(caller, row.csrf_token, row.expires_at)


def sign_out(session: Session, cookie: str | None, *, now: datetime) -> None:
    """End the cookie's session (a no-op for an unknown one)."""
    if cookie:
        session.execute(update(ConsoleSession).where(ConsoleSession.token_hash == _digest(cookie),
                                                     ConsoleSession.revoked_at.is_(None)).values(revoked_at=now))


def csrf_ok(signed: Signed, submitted: str | None) -> bool:
    """Return whether a form carried its session's CSRF token."""
    return submitted is not None and secrets.compare_digest(signed.csrf_token, submitted)


def names(session: Session, ids: set[uuid.UUID | None]) -> dict[uuid.UUID | None, str]:
    """Return principal names by id."""
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = session.execute(select(Principal.id, Principal.name).where(Principal.id.in_(wanted))).tuples()
    found: dict[uuid.UUID | None, str] = {principal_id: name for principal_id, name in rows}
    return found


def ledger_of(session: Session, tenant_id: uuid.UUID, decision_id: uuid.UUID) -> list[LedgerEntry]:
    """Return a decision's ledger rows in order."""
    return list(session.scalars(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id,
                                                          LedgerEntry.decision_id == decision_id)
                                .order_by(LedgerEntry.seq)))


@dataclass(frozen=True)
class BudgetView:
    scope_key: str
    limit: Decimal
    reserved: Decimal
    month_to_date: Decimal | None
    forecast: Decimal | None
    spend_status: str

    @property
    def reserved_percent(self) -> int:
        return _percent(self.reserved, self.limit)

    @property
    def forecast_percent(self) -> int:
        return _percent(self.forecast or ZERO, self.limit)


def budget_views(session: Session, tenant_id: uuid.UUID, *, now: datetime, max_age_days: int) -> list[BudgetView]:
    """Return each active budget with what is reserved against it and its month-to-date spend and forecast."""
    views = []
    for budget in budgets.list_budgets(session, tenant_id):
        if not budget.active:
            continue
        spend = costs.read_spend(session, tenant_id, budget.scope_key, now, max_age_days=max_age_days)
        views.append(BudgetView(budget.scope_key, monthly(budget.monthly_limit_usd), monthly(budget.reserved_usd),
                                monthly(spend.month_to_date) if spend.usable else None,
                                monthly(spend.forecast_eom) if spend.usable else None, spend.status))
    return views


def _percent(part: Decimal, whole: Decimal) -> int:
    if whole <= 0:
        return 100 if part > 0 else 0
    return int(min(Decimal(999), part * 100 / whole))
