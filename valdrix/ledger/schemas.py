"""The ledger's response views."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from valdrix.decisions.schemas import Closed, Money


class LedgerEntryOut(Closed):
    seq: int
    id: uuid.UUID
    decision_id: uuid.UUID
    event: str
    source: str
    environment: str
    project_id: str
    decision: str
    reason_codes: list[str]
    policy_version: int
    policy_sha256: str
    request_fingerprint: str
    estimated_monthly_delta_usd: Money
    estimated_hourly_delta_usd: Money
    reserved_total_usd: Money
    reservation_active: bool
    approval_request_id: uuid.UUID | None
    request_payload_sha256: str
    response_payload_sha256: str
    details: dict[str, Any]
    actor: uuid.UUID | None
    recorded_at: datetime


class LedgerPage(Closed):
    items: list[LedgerEntryOut]
    next_cursor: str | None
