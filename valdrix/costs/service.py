"""Storing actual daily cost per scope and reading one scope's spend for the gate."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from sqlalchemy import cast, delete, func, literal, null, select, tuple_, union_all
from sqlalchemy.orm import Session

from valdrix.budgets.service import normalise_scope
from valdrix.costs import engine
from valdrix.costs.models import CostRecord
from valdrix.db import Money
from valdrix.decisions.models import Decision
from valdrix.errors import InvalidInput
from valdrix.money import ZERO, monthly

CURRENCY = "USD"
# Row-value IN lists are chunked so one statement never carries thousands of parameters.
_CHUNK = 400


@dataclass(frozen=True)
class DailyCost:
    """One scope's cost on one day, in USD, belonging to a billing period."""

    scope_key: str
    cost_date: date
    amount: Decimal
    period_key: str


@dataclass(frozen=True)
class BatchResult:
    batch_id: uuid.UUID
    source: str
    periods: tuple[str, ...]
    rows: int
    replaced: int
    total_usd: Decimal


def check_currency(currency: str) -> None:
    """Raise InvalidInput unless `currency` is USD (no conversion is configured)."""
    if currency.strip().upper() != CURRENCY:
        raise InvalidInput(f"currency {currency!r} is not supported: only USD costs are accepted (no conversion "
                           "is configured)", code="unsupported_currency", currency=currency)


def put_days(session: Session, tenant_id: uuid.UUID, source: str, days: Sequence[DailyCost], *,
             now: datetime) -> BatchResult:
    """Store daily costs, each replacing the stored row of the same (source, scope, day); return the counts.

    Raise InvalidInput when a (scope, day) appears twice in the batch.
    """
    keys = [(normalise_scope(d.scope_key), d.cost_date) for d in days]
    if len(set(keys)) != len(keys):
        raise InvalidInput("each (scope_key, date) may appear once per batch", code="duplicate_cost_record")
    replaced = 0
    for chunk in _chunks(keys):
        result = session.execute(delete(CostRecord).where(CostRecord.tenant_id == tenant_id,
                                                          CostRecord.source == source,
                                                          tuple_(CostRecord.scope_key, CostRecord.cost_date)
                                                          .in_(chunk)))
        replaced += int(getattr(result, "rowcount", 0) or 0)
    return _insert(session, tenant_id, source, days, replaced, now)


def replace_periods(session: Session, tenant_id: uuid.UUID, source: str, days: Sequence[DailyCost], *,
                    now: datetime) -> BatchResult:
    """Replace everything stored for (source, billing period) of every period in `days` by `days`; return counts."""
    periods = sorted({d.period_key for d in days})
    result = session.execute(delete(CostRecord).where(CostRecord.tenant_id == tenant_id, CostRecord.source == source,
                                                      CostRecord.period_key.in_(periods)))
    return _insert(session, tenant_id, source, days, int(getattr(result, "rowcount", 0) or 0), now)


def _insert(session: Session, tenant_id: uuid.UUID, source: str, days: Sequence[DailyCost], replaced: int,
            now: datetime) -> BatchResult:
    batch = uuid.uuid4()
    session.add_all([CostRecord(id=uuid.uuid4(), tenant_id=tenant_id, source=source, period_key=d.period_key,
                                scope_key=normalise_scope(d.scope_key), cost_date=d.cost_date,
                                amount_usd=monthly(d.amount), currency=CURRENCY, batch_id=batch, imported_at=now)
                     for d in days])
    session.flush()
    return BatchResult(batch_id=batch, source=source, periods=tuple(sorted({d.period_key for d in days})),
                       rows=len(days), replaced=replaced, total_usd=monthly(sum((d.amount for d in days), ZERO)))


def _chunks(items: list[tuple[str, date]]) -> Iterable[list[tuple[str, date]]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def read_spend(session: Session, tenant_id: uuid.UUID, scope_key: str, now: datetime, *,
               max_age_days: int) -> engine.Spend:
    """Return the scope's spend summary from one statement: its daily totals and the tenant's newest cost date."""
    today = now.date()
    days = (select(CostRecord.cost_date, cast(func.sum(CostRecord.amount_usd), Money), literal("d"))
            .where(CostRecord.tenant_id == tenant_id, CostRecord.scope_key == scope_key,
                   CostRecord.cost_date >= engine.window_start(now), CostRecord.cost_date <= today)
            .group_by(CostRecord.cost_date))
    newest = select(func.max(CostRecord.cost_date), cast(null(), Money), literal("n")).where(
        CostRecord.tenant_id == tenant_id, CostRecord.cost_date <= today)
    daily: dict[date, Decimal] = {}
    through: date | None = None
    for day, amount, kind in session.execute(union_all(days, newest)):
        if kind == "n":
            through = day
        elif day is not None:
            daily[day] = Decimal(amount or 0)
    return engine.summarise(scope_key, daily, through, now, max_age_days=max_age_days)


def unreflected_reserved(session: Session, tenant_id: uuid.UUID, scope_key: str, data_through: date | None) -> Decimal:
    """Return the scope's active allocations not yet visible in spend: those created on or after `data_through`.

    A reservation created before the newest cost date belongs to a change whose cost the imported days
    already carry; counting it again would charge the budget twice.
    """
    query = select(func.coalesce(func.sum(Decision.reserved_allocation_usd), 0)).where(
        Decision.tenant_id == tenant_id, Decision.reservation_active.is_(True), Decision.budget_scope == scope_key)
    if data_through is not None:
        query = query.where(Decision.created_at >= datetime.combine(data_through, time.min, tzinfo=UTC))
    return monthly(Decimal(session.scalar(query) or 0))
