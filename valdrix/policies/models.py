"""Immutable policy versions: every change to a tenant's policy document is a new row."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from valdrix.db import Base


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    __table_args__ = (Index("ix_policy_versions_tenant_version", "tenant_id", "version", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    version: Mapped[int]
    schema_version: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]]
    sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
