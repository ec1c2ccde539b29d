"""The audit export's response views (the archive itself is `application/zip`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ExportWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str
    end: str
    created_at_from: str
    created_at_before: str


class ParityOut(BaseModel):
    """Counts in the database and in the export, the exported files' digests, both lineages, the signature."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    window: ExportWindow
    decision_count_db: int
    decision_count_exported: int
    approval_count_db: int
    approval_count_exported: int
    ledger_count_db: int
    ledger_count_exported: int
    decisions_sha256: str
    approvals_sha256: str
    ledger_sha256: str
    policies_sha256: str
    policy_lineage: list[dict[str, Any]]
    policy_lineage_sha256: str
    computed_context_lineage: list[dict[str, Any]]
    computed_context_lineage_sha256: str
    parity_ok: bool
    manifest_sha256: str
    signature: str = Field(description="Base64 signature of the manifest")
    signature_algorithm: str
    signature_kid: str
