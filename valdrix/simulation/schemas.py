"""The simulation request (a candidate policy and a window) and its report."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from valdrix.environments import normalise_environment
from valdrix.money import monthly
from valdrix.policies.schemas import PolicyDocument

MAX_WINDOW_DAYS = 90
DEFAULT_WINDOW_DAYS = 30
MAX_PAGE = 500

# Dollar amounts in the report: 4-dp strings, like every amount the API answers.
Usd = Annotated[Decimal, PlainSerializer(lambda v: str(monthly(v)), return_type=str)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulationRequest(_Closed):
    """A candidate policy (validated exactly as `PUT /policies` validates it) and the decisions to replay."""

    policy: PolicyDocument
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=1, le=MAX_WINDOW_DAYS,
                             description="Replay the decisions of this many days before `until`.")
    until: AwareDatetime | None = Field(default=None, description="End of the window (exclusive); default now. "
                                        "A `cursor` carries the window end of the first page.")
    source: Literal["terraform", "k8s_admission", "cloud_event"] | None = None
    project_id: str | None = Field(default=None, min_length=1, max_length=128)
    environment: str | None = Field(default=None, min_length=1, max_length=32)
    limit: int = Field(default=50, ge=0, le=MAX_PAGE, description="Changed decisions listed per page.")
    cursor: str | None = Field(default=None, max_length=512)

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        # Stored project ids are lower-cased by the gate.
        return None if value is None else value.strip().lower() or None

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str | None) -> str | None:
        return None if value is None else normalise_environment(value)


class Window(BaseModel):
    start: datetime
    end: datetime
    days: int


class Filters(BaseModel):
    source: str | None
    project_id: str | None
    environment: str | None


class PolicyRef(BaseModel):
    version: int
    sha256: str


class OutcomeBody(BaseModel):
    decision: str
    reason_codes: list[str]
    reserved_usd: Usd
    reserved_allocation_usd: Usd
    reserved_credit_usd: Usd
    approval_rule_id: str | None = Field(description="The routing rule its approval request follows (none "
                                         "without an approval).")
    required_permission: str | None


class ChangedDecision(BaseModel):
    decision_id: uuid.UUID
    created_at: datetime
    source: str
    project_id: str
    environment: str
    action: str
    resource_reference: str
    estimated_monthly_delta_usd: Usd
    current: OutcomeBody
    candidate: OutcomeBody


class Transition(BaseModel):
    current: str
    candidate: str
    count: int


class NotReplayable(BaseModel):
    total: int
    reasons: dict[str, int] = Field(description="Count per reason (see docs/simulation.md).")


class ReservedChange(BaseModel):
    current: Usd
    candidate: Usd
    change: Usd


class Impact(BaseModel):
    key: str
    changed: int
    reserved_change_usd: Usd


class MostAffected(BaseModel):
    projects: list[Impact]
    environments: list[Impact]


class SimulationReport(BaseModel):
    """What the candidate would have decided over the window, against what was decided."""

    candidate_policy_sha256: str
    current_policy: PolicyRef
    window: Window
    filters: Filters
    decisions_evaluated: int = Field(description="Decisions of the window (dry runs excluded).")
    replayed: int
    changed: int = Field(description="Replayed decisions whose outcome (decision, reasons, reservation or "
                         "approval routing) differs under the candidate.")
    not_replayable: NotReplayable
    transitions: list[Transition] = Field(description="Replayed decisions by (current → candidate) decision.")
    reserved_usd: ReservedChange
    most_affected: MostAffected
    changes: list[ChangedDecision] = Field(description="One page of changed decisions, oldest first.")
    next_cursor: str | None
    audit_event_id: uuid.UUID | None = Field(description="The audit-trail record of this simulation.")
