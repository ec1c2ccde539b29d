"""Daily actual cost per scope, one row per (source, billing period, scope, day)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base


class CostRecord(Base):
    """What one scope cost on one day according to one source; re-imports replace rows, never add to them."""

    __tablename__ = "cost_records"
    __table_args__ = (
        Index("ix_cost_records_identity", "tenant_id", "source", "period_key", "scope_key", "cost_date",
              unique=True),
        # The gate's spend read: one scope's days in a window, plus the tenant's newest day.
        Index("ix_cost_records_scope_date", "tenant_id", "scope_key", "cost_date"),
        Index("ix_cost_records_tenant_date", "tenant_id", "cost_date"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    source: Mapped[str] = mapped_column(String(64))
    # The billing period the row belongs to (FOCUS BillingPeriodStart, or the day's month for API rows).
    period_key: Mapped[str] = mapped_column(String(32))
    scope_key: Mapped[str] = mapped_column(String(128))
    cost_date: Mapped[date] = mapped_column(Date)
    amount_usd: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    batch_id: Mapped[uuid.UUID]
    imported_at: Mapped[datetime]
