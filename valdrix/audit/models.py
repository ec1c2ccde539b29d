"""The audit trail of tenant actions that change no decision (those are in the decision ledger).

Append-only, like the ledger: one row per action, never updated or deleted. `event` names the action
(`policy_simulated`), `details` holds what identifies it (for a simulation: the candidate policy's hash, the
window and the counts). It references no decision, so it depends on nothing but tenants.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_recorded", "tenant_id", "recorded_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    event: Mapped[str] = mapped_column(String(48))
    actor: Mapped[uuid.UUID | None]
    details: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime]
