"""The append-only decision ledger: one row per decision state change, never updated or deleted."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base, HourlyMoney


class LedgerEntry(Base):
    __tablename__ = "decision_ledger"
    __table_args__ = (
        Index("ix_decision_ledger_tenant_recorded", "tenant_id", "recorded_at", "seq"),
        Index("ix_decision_ledger_decision", "decision_id"),
    )

    # A database-assigned sequence gives a total order that concurrent writers cannot tie on.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    decision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("decisions.id"))
    event: Mapped[str] = mapped_column(String(48))
    source: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(32))
    project_id: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(32))
    reason_codes: Mapped[list[Any]]
    policy_version: Mapped[int]
    policy_sha256: Mapped[str] = mapped_column(String(64))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    estimated_monthly_delta_usd: Mapped[Decimal]
    estimated_hourly_delta_usd: Mapped[Decimal] = mapped_column(HourlyMoney)
    reserved_total_usd: Mapped[Decimal]
    reservation_active: Mapped[bool]
    approval_request_id: Mapped[uuid.UUID | None]
    request_payload_sha256: Mapped[str] = mapped_column(String(64))
    response_payload_sha256: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    actor: Mapped[uuid.UUID | None]
    recorded_at: Mapped[datetime]
