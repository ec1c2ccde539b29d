"""Reservation request bodies."""

from __future__ import annotations

from pydantic import Field

from valdrix.decisions.schemas import Closed
from valdrix.money import Amount


class ReconcileIn(Closed):
    actual_monthly_delta_usd: Amount
    notes: str | None = Field(default=None, max_length=1000)


class OverdueIn(Closed):
    older_than_seconds: int | None = Field(default=None, ge=60, le=604800, strict=True)
    limit: int = Field(default=200, ge=1, le=1000, strict=True)
