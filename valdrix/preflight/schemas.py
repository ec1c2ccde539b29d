"""The Terraform preflight request (runbook §1.1): the generic gate body plus the run that asks."""

from __future__ import annotations

from pydantic import Field

from valdrix.decisions.schemas import Continuation, DecisionOut, GateRequest


class TerraformPreflightRequest(GateRequest):
    run_id: str = Field(min_length=1, max_length=128)
    stage: str = Field(default="pre_apply", min_length=1, max_length=64)
    workspace_id: str | None = Field(default=None, min_length=1, max_length=128)
    workspace_name: str | None = Field(default=None, min_length=1, max_length=256)
    callback_url: str | None = Field(default=None, min_length=1, max_length=2048)
    run_url: str | None = Field(default=None, min_length=1, max_length=2048)
    action: str = Field(default="terraform.apply", min_length=1, max_length=128)


class PreflightOut(DecisionOut):
    run_id: str
    stage: str
    idempotency_key: str
    replayed: bool
    continuation: Continuation | None = Field(description="null when the answer was not recorded")
