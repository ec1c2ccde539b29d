"""Budgets, credit grants and the reservations decisions hold against them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, Update, bindparam, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from valdrix.budgets.models import Budget, CreditGrant, CreditReservation
from valdrix.db import Statement
from valdrix.decisions.models import Decision
from valdrix.errors import Conflict, InvalidInput
from valdrix.money import ZERO, monthly

POOLS = ("reserved", "emergency")


def normalise_scope(raw: str | None) -> str:
    """Return a scope key: trimmed, lower-cased, `default` when empty."""
    return (raw or "").strip().lower() or "default"


def list_budgets(session: Session, tenant_id: uuid.UUID) -> list[Budget]:
    """Return the tenant's budgets ordered by scope."""
    return list(session.scalars(select(Budget).where(Budget.tenant_id == tenant_id).order_by(Budget.scope_key)))


def put_budget(session: Session, tenant_id: uuid.UUID, scope_key: str, limit: Decimal, *, active: bool,
               now: datetime) -> Budget:
    """Create or update the budget of one scope; the running reservation total is kept."""
    scope = normalise_scope(scope_key)
    row = session.scalars(select(Budget).where(Budget.tenant_id == tenant_id, Budget.scope_key == scope)
                          .with_for_update()).first()
    if row is None:
        row = Budget(id=uuid.uuid4(), tenant_id=tenant_id, scope_key=scope, reserved_usd=ZERO)
        session.add(row)
    row.monthly_limit_usd = monthly(limit)
    row.active = active
    row.updated_at = now
    session.flush()
    return row


def list_grants(session: Session, tenant_id: uuid.UUID) -> list[CreditGrant]:
    """Return the tenant's credit grants, newest first."""
    return list(session.scalars(select(CreditGrant).where(CreditGrant.tenant_id == tenant_id)
                                .order_by(CreditGrant.created_at.desc(), CreditGrant.id)))


def create_grant(session: Session, tenant_id: uuid.UUID, *, pool: str, scope_key: str, amount: Decimal,
                 expires_at: datetime | None, reason: str | None, actor: uuid.UUID | None,
                 now: datetime) -> CreditGrant:
    """Create a credit grant; raise InvalidInput for an unknown pool or an expiry in the past."""
    if pool not in POOLS:
        raise InvalidInput(f"pool must be one of {POOLS}", code="invalid_credit_pool")
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future", code="credit_expiry_in_past")
    grant = CreditGrant(id=uuid.uuid4(), tenant_id=tenant_id, pool=pool, scope_key=normalise_scope(scope_key),
                        total_usd=monthly(amount), remaining_usd=monthly(amount), expires_at=expires_at,
                        reason=reason, active=True, created_by=actor, created_at=now)
    session.add(grant)
    session.flush()
    return grant


# The gate's statements, built once per process.
# Budget allocations plus drawn credit, read in one round trip (it runs under the tenant lock).
_TENANT_RESERVED = Statement(select(
    select(func.coalesce(func.sum(Budget.reserved_usd), 0))
    .where(Budget.tenant_id == bindparam("tenant_id")).scalar_subquery().label("allocated"),
    select(func.coalesce(func.sum(CreditReservation.reserved_usd), 0))
    .where(CreditReservation.tenant_id == bindparam("tenant_id"), CreditReservation.active.is_(True))
    .scalar_subquery().label("credit")))


_ANY_BUDGET = Statement(select(Budget.id).where(Budget.tenant_id == bindparam("tenant_id"),
                                                Budget.active.is_(True)).limit(1))


def tenant_has_budgets(session: Session, tenant_id: uuid.UUID) -> bool:
    """Return whether the tenant has any active budget."""
    return bool(_ANY_BUDGET.run(session, {"tenant_id": tenant_id}))


def lock_query(scope_key: ColumnElement[str], *conditions: ColumnElement[bool]) -> Select[Any]:
    """Return the locking read of tenant `:tenant_id`'s active budget of `scope_key`, made only where all
    `conditions` hold.

    An equality on the (tenant, scope) unique index, so no prepared plan of it can read the tenant's other
    budgets. NO KEY UPDATE: inserts whose foreign keys point at the row need not wait.
    """
    return (select(Budget.id, Budget.scope_key, Budget.monthly_limit_usd, Budget.reserved_usd)
            .where(Budget.tenant_id == bindparam("tenant_id"), Budget.scope_key == scope_key, Budget.active.is_(True),
                   *conditions)
            .with_for_update(key_share=True))


def hold_statement(prefix: str = "") -> Update:
    """Return the UPDATE of a budget's running reservation total (bound as `prefix` + budget_id / held_usd)."""
    return (update(Budget).where(Budget.id == bindparam(prefix + "budget_id"))
            .values(reserved_usd=bindparam(prefix + "held_usd")))


_HOLD = Statement(hold_statement())


def tenant_reserved_total(session: Session, tenant_id: uuid.UUID) -> Decimal:
    """Return everything the tenant holds in active reservations: budget allocations plus drawn credit."""
    (row,) = _TENANT_RESERVED.run(session, {"tenant_id": tenant_id})
    return monthly(Decimal(row.allocated or 0) + Decimal(row.credit or 0))


@dataclass(frozen=True)
class LockedBudget:
    """A budget row read under its row lock, which the transaction holds until it ends."""

    id: uuid.UUID
    scope_key: str
    monthly_limit_usd: Decimal
    reserved_usd: Decimal


@dataclass(frozen=True)
class Grants:
    reserved: list[CreditGrant]
    emergency: list[CreditGrant]

    @property
    def reserved_headroom(self) -> Decimal:
        return sum((g.remaining_usd for g in self.reserved), ZERO)

    @property
    def emergency_headroom(self) -> Decimal:
        return sum((g.remaining_usd for g in self.emergency), ZERO)


def lock_grants(session: Session, tenant_id: uuid.UUID, project_id: str, now: datetime) -> Grants:
    """Return usable grants, row-locked: reserved pool of the project or `default` scope, emergency of any."""
    rows = session.scalars(
        select(CreditGrant).where(
            CreditGrant.tenant_id == tenant_id, CreditGrant.active.is_(True), CreditGrant.remaining_usd > 0,
            or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > now),
            or_(CreditGrant.pool == "emergency", CreditGrant.scope_key.in_({project_id, "default"})),
        ).order_by(CreditGrant.id).with_for_update(key_share=True)
    ).all()
    far = datetime.max.replace(tzinfo=now.tzinfo)

    def order(g: CreditGrant) -> tuple[int, datetime, datetime, str]:
        # Project grants before shared ones, soonest-expiring first, so the most perishable credit is spent.
        return (0 if g.scope_key == project_id else 1, g.expires_at or far, g.created_at, str(g.id))

    return Grants(reserved=sorted((g for g in rows if g.pool == "reserved"), key=order),
                  emergency=sorted((g for g in rows if g.pool == "emergency"), key=order))


@dataclass(frozen=True)
class Draw:
    """An amount of credit a decision takes from one grant."""

    grant: CreditGrant
    pool: str
    amount: Decimal

    def as_json(self) -> dict[str, str]:
        return {"grant_id": str(self.grant.id), "pool": self.pool, "amount_usd": str(self.amount)}


def draw_credits(grants: Grants | None, *, reserved_credits: Decimal, emergency_credits: Decimal) -> list[Draw]:
    """Return which grants cover the credit amounts, in spending order; raise Conflict if the pools fall short."""
    draws: list[Draw] = []
    for pool, amount in (("reserved", reserved_credits), ("emergency", emergency_credits)):
        remaining = amount
        for grant in (getattr(grants, pool) if grants else []):
            if remaining <= 0:
                break
            take = min(remaining, grant.remaining_usd)
            remaining -= take
            draws.append(Draw(grant, pool, take))
        if remaining > 0:
            # The grants were read under lock just before, so this means a bug, not a race.
            raise Conflict(f"credit pool {pool} short by {remaining}", code="credit_headroom_shortfall")
    return draws


def hold(budget: LockedBudget | None, allocation: Decimal) -> dict[str, Any] | None:
    """Return the `hold_statement` parameters adding `allocation` to the locked budget, or None for nothing."""
    if allocation <= 0:
        return None
    assert budget is not None
    return {"budget_id": budget.id, "held_usd": monthly(budget.reserved_usd + allocation)}


NO_HOLD: dict[str, Any] = {"budget_id": None, "held_usd": None}  # matches no budget row


def write_hold(session: Session, params: dict[str, Any]) -> None:
    """Set the budget's reservation total as `hold` computed it (the budget row is locked by this transaction)."""
    _HOLD.run(session, params)


def draw(session: Session, decision: Decision, draws: list[Draw], *, now: datetime) -> None:
    """Debit the drawn credit from its grants, recording one credit reservation per grant."""
    for taken in draws:
        taken.grant.remaining_usd = monthly(taken.grant.remaining_usd - taken.amount)
        session.add(CreditReservation(id=uuid.uuid4(), tenant_id=decision.tenant_id, decision_id=decision.id,
                                      grant_id=taken.grant.id, pool=taken.pool, reserved_usd=taken.amount,
                                      consumed_usd=ZERO, released_usd=ZERO, active=True, settled_at=None,
                                      created_at=now))


@dataclass(frozen=True)
class Settlement:
    """What settling a reservation did: allocation consumed/released, credit consumed/released per grant."""

    allocation_consumed: Decimal
    allocation_released: Decimal
    credit_consumed: Decimal
    credit_released: Decimal
    credits: tuple[dict[str, str], ...] = ()

    @property
    def reserved_total(self) -> Decimal:
        return monthly(self.allocation_consumed + self.allocation_released + self.credit_consumed
                       + self.credit_released)


def claim(session: Session, decision: Decision, *, now: datetime) -> bool:
    """Return whether this transaction ended the decision's active reservation (False if it was not active).

    One conditional UPDATE: of two concurrent settlements the second blocks on the row lock, then matches
    no row, so a reservation is only ever settled once.
    """
    result = session.execute(update(Decision).where(Decision.id == decision.id, Decision.reservation_active.is_(True))
                             .values(reservation_active=False, updated_at=now)
                             .execution_options(synchronize_session=False))
    claimed = bool(getattr(result, "rowcount", 0) == 1)
    set_committed_value(decision, "reservation_active", False if claimed else decision.reservation_active)
    if claimed:
        set_committed_value(decision, "updated_at", now)
    return claimed


def settle(session: Session, decision: Decision, *, actual_monthly: Decimal, now: datetime) -> Settlement:
    """Settle an active reservation against `actual_monthly`: consume what was used, refund the rest.

    Allocation is consumed first, then credit in the order it was drawn; released credit returns to its
    grant exactly. Raise Conflict if the decision holds no active reservation (including when a concurrent
    settlement claimed it first).
    """
    if not decision.reservation_active or not claim(session, decision, now=now):
        raise Conflict("decision holds no active reservation", code="reservation_not_active")
    allocation = decision.reserved_allocation_usd
    alloc_used = min(allocation, max(ZERO, actual_monthly))
    if allocation > 0 and decision.budget_scope is not None:
        # round(): SQLite keeps NUMERIC as binary floating point, so unrounded sums drift below zero.
        session.execute(update(Budget).where(Budget.tenant_id == decision.tenant_id,
                                             Budget.scope_key == decision.budget_scope)
                        .values(reserved_usd=func.round(Budget.reserved_usd - allocation, 4))
                        .execution_options(synchronize_session="fetch"))
    left = max(ZERO, actual_monthly - alloc_used)
    credit_used = credit_released = ZERO
    credits: list[dict[str, str]] = []
    rows = session.scalars(select(CreditReservation).where(CreditReservation.decision_id == decision.id,
                                                           CreditReservation.active.is_(True))
                           .order_by(CreditReservation.created_at, CreditReservation.id)).all()
    for row in rows:
        used = min(row.reserved_usd, left)
        left -= used
        released = row.reserved_usd - used
        row.consumed_usd, row.released_usd, row.active, row.settled_at = used, released, False, now
        if released > 0:
            session.execute(update(CreditGrant).where(CreditGrant.id == row.grant_id)
                            .values(remaining_usd=func.round(CreditGrant.remaining_usd + released, 4))
                            .execution_options(synchronize_session="fetch"))
        credit_used += used
        credit_released += released
        credits.append({"grant_id": str(row.grant_id), "pool": row.pool, "reserved_usd": str(monthly(row.reserved_usd)),
                        "consumed_usd": str(monthly(used)), "released_usd": str(monthly(released))})
    session.flush()
    return Settlement(allocation_consumed=monthly(alloc_used), allocation_released=monthly(allocation - alloc_used),
                      credit_consumed=monthly(credit_used), credit_released=monthly(credit_released),
                      credits=tuple(credits))


def release(session: Session, decision: Decision, *, now: datetime) -> Settlement:
    """Release a reservation in full (deny, expiry, overdue sweep): every dollar returns to where it came from."""
    return settle(session, decision, actual_monthly=ZERO, now=now)
