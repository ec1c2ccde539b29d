"""The approval request row: one per REQUIRE_APPROVAL decision, with its frozen routing and its one token."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base

STATUSES = ("pending", "approved", "denied", "expired", "revoked")
# An approval whose token can still be redeemed (its expiry is checked against the clock).
REDEEMABLE = "status = 'approved' AND token_consumed_at IS NULL"


class ApprovalRequest(Base):
    """Status moves only pending → approved | denied | expired, and approved (unconsumed) → revoked, each by one
    conditional UPDATE.

    Only the token's hash and `jti` are kept in clear; the token itself is kept sealed (encrypted under a key
    derived from the signing key) until its requester picks it up or it is consumed, then erased.
    """

    __tablename__ = "approval_requests"
    __table_args__ = (
        Index("ix_approval_requests_tenant_status", "tenant_id", "status", "created_at"),
        # The approval history, newest first, whatever the status.
        Index("ix_approval_requests_tenant_created", "tenant_id", "created_at"),
        Index("ix_approval_requests_due", "status", "expires_at"),
        # Every priced admission looks for an approval it can redeem: this index holds only those, however
        # many used ones a tenant keeps.
        Index("ix_approval_requests_redeemable", "tenant_id", "token_expires_at",
              postgresql_where=text(REDEEMABLE), sqlite_where=text(REDEEMABLE)),
        CheckConstraint("status IN ('pending', 'approved', 'denied', 'expired', 'revoked')", name="status_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    decision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("decisions.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[uuid.UUID | None]
    reviewed_by: Mapped[uuid.UUID | None]
    review_notes: Mapped[str | None] = mapped_column(String(1000))
    routing: Mapped[dict[str, Any]]
    routing_rule_id: Mapped[str] = mapped_column(String(64))
    required_permission: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime]
    approved_at: Mapped[datetime | None]
    denied_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    token_jti: Mapped[str | None] = mapped_column(String(64))
    token_hash: Mapped[str | None] = mapped_column(String(64))
    token_expires_at: Mapped[datetime | None]
    token_sealed: Mapped[str | None] = mapped_column(Text)
    token_picked_up_at: Mapped[datetime | None]
    token_consumed_at: Mapped[datetime | None]
    token_consumed_by: Mapped[uuid.UUID | None]
    # The Idempotency-Key of the consume that burned the token: the same key (with the same token and
    # binding) replays that consume's answer instead of a 409, so a lost response never loses the approval.
    consume_idempotency_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
