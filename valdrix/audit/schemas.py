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
    """Counts in the database and in the export (one snapshot), both lineages, and the signed summary's digest."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    window: ExportWindow
    canonicalization: str = Field(description="How the summary and lineages are canonicalised (RFC 8785)")
    decision_count_db: int
    decision_count_exported: int
    approval_count_db: int
    approval_count_exported: int
    ledger_count_db: int
    ledger_count_exported: int
    policy_lineage: list[dict[str, Any]]
    policy_lineage_sha256: str
    computed_context_lineage: list[dict[str, Any]]
    computed_context_lineage_sha256: str
    parity_ok: bool
    signature_algorithm: str
    signature_kid: str
    summary_sha256: str = Field(description="SHA-256 of the canonical summary (every member above)")
    signature: str = Field(description="Base64 signature of the canonical summary")
