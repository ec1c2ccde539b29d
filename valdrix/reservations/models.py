"""The outcome of settling one decision's reservation: a manual reconciliation or an automatic release."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base


class Reconciliation(Base):
    """One per decision: a reservation is settled once, so a repeated request can only replay this row."""

    __tablename__ = "reservation_reconciliations"
    __table_args__ = (
        Index("ix_reservation_reconciliations_decision", "tenant_id", "decision_id", unique=True),
        Index("ix_reservation_reconciliations_status", "tenant_id", "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    decision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("decisions.id"))
    trigger: Mapped[str] = mapped_column(String(16))  # manual | auto
    status: Mapped[str] = mapped_column(String(16))  # matched | overage | savings | auto_released
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    reserved_usd: Mapped[Decimal]
    actual_monthly_delta_usd: Mapped[Decimal | None]
    drift_usd: Mapped[Decimal | None]  # actual - reserved; none for an automatic release
    allocation_consumed_usd: Mapped[Decimal]
    allocation_released_usd: Mapped[Decimal]
    credit_consumed_usd: Mapped[Decimal]
    credit_released_usd: Mapped[Decimal]
    credit_settlement: Mapped[list[Any]]
    notes: Mapped[str | None] = mapped_column(String(1000))
    actor: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
