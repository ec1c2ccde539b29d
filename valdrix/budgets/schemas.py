"""Budget and credit-grant request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from valdrix.decisions.schemas import Closed
from valdrix.money import Amount, PositiveAmount


class BudgetIn(Closed):
    scope_key: str = Field(min_length=1, max_length=128)
    monthly_limit_usd: Amount
    active: bool = True


class BudgetsPut(Closed):
    budgets: list[BudgetIn] = Field(min_length=1, max_length=500)


class CreditGrantIn(Closed):
    pool: Literal["reserved", "emergency"] = "reserved"
    scope_key: str = Field(default="default", min_length=1, max_length=128)
    amount_usd: PositiveAmount
    expires_at: datetime | None = None
    reason: str | None = Field(default=None, max_length=500)
