"""The decision row: one per (tenant, source, idempotency key); its history lives in the ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base, DocumentType, HourlyMoney


class Decision(Base):
    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_idempotency", "idempotency_key", "source", "tenant_id", unique=True),
        Index("ix_decisions_tenant_created", "tenant_id", "created_at"),
        # Decision search by project (console, `valdrix decisions list --project`), newest first.
        Index("ix_decisions_tenant_project_created", "tenant_id", "project_id", "created_at"),
        Index("ix_decisions_active_reservations", "tenant_id", "reservation_active", "created_at"),
        # The worker's cross-tenant overdue sweep: only the (few) rows still holding a reservation, by age.
        Index("ix_decisions_reservation_age", "created_at", postgresql_where=text("reservation_active"),
              sqlite_where=text("reservation_active")),
        CheckConstraint("estimated_monthly_delta_usd >= 0", name="monthly_non_negative"),
        CheckConstraint("estimated_hourly_delta_usd >= 0", name="hourly_non_negative"),
        CheckConstraint("reserved_allocation_usd >= 0 AND reserved_credit_usd >= 0", name="reserved_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    source: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(32))
    project_id: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(128))
    resource_reference: Mapped[str] = mapped_column(String(512))
    decision: Mapped[str] = mapped_column(String(32))
    reason_codes: Mapped[list[Any]]
    mode: Mapped[str] = mapped_column(String(16))
    fail_safe: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    dry_run: Mapped[bool]
    policy_version: Mapped[int]
    policy_sha256: Mapped[str] = mapped_column(String(64))
    request_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(160))
    estimated_monthly_delta_usd: Mapped[Decimal]
    estimated_hourly_delta_usd: Mapped[Decimal] = mapped_column(HourlyMoney)
    budget_scope: Mapped[str | None] = mapped_column(String(128))
    reserved_allocation_usd: Mapped[Decimal]
    reserved_credit_usd: Mapped[Decimal]
    reservation_active: Mapped[bool]
    approval_request_id: Mapped[uuid.UUID | None]
    # Stored as their canonical JSON text, which an audit export copies as its cells (`audit.streams`).
    request_payload: Mapped[dict[str, Any]] = mapped_column(DocumentType)
    response_payload: Mapped[dict[str, Any]] = mapped_column(DocumentType)
    computed_context: Mapped[dict[str, Any]] = mapped_column(DocumentType)
    # Its computed-context lineage entry, written with it (`lineage.seal`): what an export's parity check reads.
    context_lineage_group: Mapped[str] = mapped_column(Text)
    computed_context_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
