"""Notification targets, the event outbox, one delivery row per (event, target), and budget threshold notices."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base

TARGET_KINDS = ("webhook", "slack")
DELIVERY_STATUSES = ("pending", "delivered", "dead")


class NotificationTarget(Base):
    """Where a tenant's events go. `secret` is the Standard Webhooks signing secret (webhook) or the incoming
    webhook URL (Slack, whose URL is its credential); it is returned once, at creation, and never again."""

    __tablename__ = "notification_targets"
    __table_args__ = (
        Index("ix_notification_targets_tenant", "tenant_id", "created_at"),
        CheckConstraint("kind IN ('webhook', 'slack')", name="kind_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(Text)
    # Empty lists match everything.
    event_types: Mapped[list[Any]]
    project_ids: Mapped[list[Any]]
    environments: Mapped[list[Any]]
    active: Mapped[bool]
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]


class NotificationEvent(Base):
    """The outbox: one row per event, written in the transaction of the change it reports. Its `id` is the
    `webhook-id` of every delivery of it, so receivers can deduplicate at-least-once deliveries."""

    __tablename__ = "notification_events"
    __table_args__ = (
        # The worker fans out the events it has not dispatched yet, oldest first.
        Index("ix_notification_events_undispatched", "dispatched_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    type: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(128))
    environment: Mapped[str | None] = mapped_column(String(32))
    # Set only for a test event, which goes to that one target whatever its filters.
    target_id: Mapped[uuid.UUID | None]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]


class NotificationDelivery(Base):
    """One event to one target: retried with backoff until delivered or dead. A replica works on a delivery only
    while it holds the row's lease, so no two replicas send one delivery at once."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "target_id"),
        Index("ix_notification_deliveries_due", "status", "next_attempt_at"),
        Index("ix_notification_deliveries_tenant", "tenant_id", "created_at"),
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notification_events.id"))
    target_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notification_targets.id"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_status_code: Mapped[int | None]
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BudgetThresholdNotice(Base):
    """A budget scope crossed a utilisation threshold in a month: the unique key makes the notice once only."""

    __tablename__ = "budget_threshold_notices"
    __table_args__ = (UniqueConstraint("tenant_id", "scope_key", "month", "percent"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    scope_key: Mapped[str] = mapped_column(String(128))
    month: Mapped[str] = mapped_column(String(7))
    percent: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
