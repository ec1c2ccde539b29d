"""Terraform preflight request → the one decision input."""

from __future__ import annotations

from valdrix.decisions import engine
from valdrix.preflight.schemas import TerraformPreflightRequest


def to_input(body: TerraformPreflightRequest) -> engine.DecisionInput:
    """Return the decision input; run metadata joins the fingerprint so each run/stage is its own request."""
    metadata = {**body.metadata, "terraform_run_id": body.run_id, "terraform_stage": body.stage}
    for key in ("workspace_id", "workspace_name", "callback_url", "run_url"):
        value = getattr(body, key)
        if value is not None:
            metadata[f"terraform_{key}"] = value
    return engine.make_input(source="terraform", project_id=body.project_id, environment=body.environment,
                             action=body.action, resource_reference=body.resource_reference,
                             monthly_delta=body.estimated_monthly_delta_usd,
                             hourly_delta=body.estimated_hourly_delta_usd, metadata=metadata, dry_run=body.dry_run)


def idempotency_key(body: TerraformPreflightRequest, header: str | None) -> str:
    """Return the key: header, then body, then `terraform:{run_id}:{stage}`."""
    return (header or body.idempotency_key or f"terraform:{body.run_id}:{body.stage}")[:128]
