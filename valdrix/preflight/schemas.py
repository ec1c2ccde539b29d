"""The Terraform preflight request (runbook §1.1)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import Field

from valdrix.decisions.schemas import Amount, Closed, Fingerprint


class TerraformPreflightRequest(Closed):
    run_id: str = Field(min_length=1, max_length=128)
    stage: str = Field(default="pre_apply", min_length=1, max_length=64)
    workspace_id: str | None = Field(default=None, min_length=1, max_length=128)
    workspace_name: str | None = Field(default=None, min_length=1, max_length=256)
    callback_url: str | None = Field(default=None, min_length=1, max_length=2048)
    run_url: str | None = Field(default=None, min_length=1, max_length=2048)
    project_id: str = Field(default="default", min_length=1, max_length=128)
    environment: str = Field(default="nonprod", min_length=1, max_length=32)
    action: str = Field(default="terraform.apply", min_length=1, max_length=128)
    resource_reference: str = Field(min_length=1, max_length=512)
    estimated_monthly_delta_usd: Amount
    estimated_hourly_delta_usd: Amount = Decimal(0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=4, max_length=128)
    expected_request_fingerprint: Fingerprint | None = None
    dry_run: bool = False
