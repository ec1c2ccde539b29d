"""Budgets per scope, credit grants, and the credit held by each decision's reservation."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base


class Budget(Base):
    """A monthly limit for one scope; `reserved_usd` is the running total of its active reservations."""

    __tablename__ = "budgets"
    __table_args__ = (
        Index("ix_budgets_tenant_scope", "tenant_id", "scope_key", unique=True),
        CheckConstraint("monthly_limit_usd >= 0", name="limit_non_negative"),
        CheckConstraint("reserved_usd >= 0", name="reserved_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    scope_key: Mapped[str] = mapped_column(String(128))
    monthly_limit_usd: Mapped[Decimal]
    reserved_usd: Mapped[Decimal]
    active: Mapped[bool]
    updated_at: Mapped[datetime]


class CreditGrant(Base):
    __tablename__ = "credit_grants"
    __table_args__ = (
        Index("ix_credit_grants_lookup", "tenant_id", "pool", "active"),
        CheckConstraint("total_usd > 0", name="total_positive"),
        CheckConstraint("remaining_usd >= 0 AND remaining_usd <= total_usd", name="remaining_in_range"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    pool: Mapped[str] = mapped_column(String(16))
    scope_key: Mapped[str] = mapped_column(String(128))
    total_usd: Mapped[Decimal]
    remaining_usd: Mapped[Decimal]
    expires_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool]
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]


class CreditReservation(Base):
    """Credit one decision drew from one grant, and how much of it was later consumed or released."""

    __tablename__ = "credit_reservations"
    __table_args__ = (
        Index("ix_credit_reservations_decision", "decision_id"),
        CheckConstraint("reserved_usd > 0", name="reserved_positive"),
        CheckConstraint("round(consumed_usd + released_usd, 4) <= reserved_usd", name="settled_within_reserved"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    decision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("decisions.id"))
    grant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("credit_grants.id"))
    pool: Mapped[str] = mapped_column(String(16))
    reserved_usd: Mapped[Decimal]
    consumed_usd: Mapped[Decimal]
    released_usd: Mapped[Decimal]
    active: Mapped[bool]
    settled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
