"""Cost record request bodies."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import Field

from valdrix.clock import Day
from valdrix.decisions.schemas import Closed, Money
from valdrix.money import SignedAmount


class CostRecordIn(Closed):
    scope_key: str = Field(min_length=1, max_length=128)
    date: Day
    # Daily cost may be negative: credits and refunds appear as negative charges in billing exports.
    amount_usd: SignedAmount
    currency: str = Field(default="USD", min_length=3, max_length=3)


class CostBatchIn(Closed):
    source: str = Field(default="api", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    records: list[CostRecordIn] = Field(min_length=1, max_length=10000)


class CostBatchOut(Closed):
    batch_id: uuid.UUID
    source: str
    rows: int
    replaced: int
    total_usd: Money


class SpendOut(Closed):
    scope_key: str
    data_status: str
    data_through: date | None
    mtd_spend_usd: Money
    burn_rate_daily_usd: Money
    forecast_eom_usd: Money
    unreflected_reserved_usd: Money
    committed_usd: Money
    anomaly_signal: bool
    anomaly_kind: str | None
    anomaly_delta_usd: Money
    anomaly_percent: Money | None
