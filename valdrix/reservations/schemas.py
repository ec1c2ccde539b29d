"""Reservation request bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from valdrix.decisions.schemas import Closed, Money
from valdrix.money import Amount


class ReconcileIn(Closed):
    actual_monthly_delta_usd: Amount
    notes: str | None = Field(default=None, max_length=1000)


class OverdueIn(Closed):
    older_than_seconds: int | None = Field(default=None, ge=60, le=604800, strict=True)
    limit: int = Field(default=200, ge=1, le=1000, strict=True)


class ReconciliationOut(Closed):
    decision_id: uuid.UUID
    trigger: str
    status: str
    reserved_usd: Money | None
    actual_monthly_delta_usd: Money | None
    drift_usd: Money | None
    allocation_consumed_usd: Money | None
    allocation_released_usd: Money | None
    credit_consumed_usd: Money | None
    credit_released_usd: Money | None
    credit_settlement: list[Any]
    notes: str | None
    idempotency_key: str | None
    reservation_active: bool
    reconciled_at: datetime
    actor: uuid.UUID | None


class ReconciledOut(ReconciliationOut):
    replayed: bool


class ReconciliationException(ReconciliationOut):
    source: str
    environment: str
    project_id: str
    action: str
    resource_reference: str


class ExceptionPage(Closed):
    items: list[ReconciliationException]
    next_cursor: str | None


class ActiveReservation(Closed):
    decision_id: uuid.UUID
    source: str
    environment: str
    project_id: str
    action: str
    resource_reference: str
    decision: str
    budget_scope: str | None
    reserved_allocation_usd: Money | None
    reserved_credit_usd: Money | None
    reserved_total_usd: Money | None
    created_at: datetime
    age_seconds: int


class ActivePage(Closed):
    items: list[ActiveReservation]
    next_cursor: str | None


class OverdueOut(Closed):
    released_count: int
    total_released_usd: Money
    decision_ids: list[uuid.UUID]
    older_than_seconds: int
