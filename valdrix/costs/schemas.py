"""Cost record request bodies."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from valdrix.decisions.schemas import Closed
from valdrix.money import SignedAmount


class CostRecordIn(Closed):
    scope_key: str = Field(min_length=1, max_length=128)
    date: date
    # Daily cost may be negative: credits and refunds appear as negative charges in billing exports.
    amount_usd: SignedAmount
    currency: str = Field(default="USD", min_length=3, max_length=3)


class CostBatchIn(Closed):
    source: str = Field(default="api", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    records: list[CostRecordIn] = Field(min_length=1, max_length=10000)
