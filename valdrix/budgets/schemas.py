"""Budget and credit-grant request bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field, StrictBool

from valdrix.clock import Instant
from valdrix.decisions.schemas import Closed, Money
from valdrix.money import Amount, PositiveAmount


class BudgetIn(Closed):
    scope_key: str = Field(min_length=1, max_length=128)
    monthly_limit_usd: Amount
    active: StrictBool = True


class BudgetsPut(Closed):
    budgets: list[BudgetIn] = Field(min_length=1, max_length=500)


class CreditGrantIn(Closed):
    pool: Literal["reserved", "emergency"] = "reserved"
    scope_key: str = Field(default="default", min_length=1, max_length=128)
    amount_usd: PositiveAmount
    expires_at: Instant | None = None
    reason: str | None = Field(default=None, max_length=500)


class BudgetOut(Closed):
    scope_key: str
    monthly_limit_usd: Money
    reserved_usd: Money
    headroom_usd: Money
    active: bool
    updated_at: datetime


class BudgetList(Closed):
    items: list[BudgetOut]


class CreditOut(Closed):
    id: uuid.UUID
    pool: Literal["reserved", "emergency"]
    scope_key: str
    total_usd: Money
    remaining_usd: Money
    active: bool
    expires_at: datetime | None
    reason: str | None
    created_at: datetime


class CreditList(Closed):
    items: list[CreditOut]
