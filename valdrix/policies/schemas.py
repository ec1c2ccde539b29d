"""The policy document (`valdrix.enforcement.policy.v1`): closed, validated, canonically hashed."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    field_validator,
    model_validator,
)

from valdrix.canonical import sha256_hex
from valdrix.environments import normalise_environment
from valdrix.money import Amount, monthly
from valdrix.pricing.kubernetes import PricingError, parse_quantity

SCHEMA_VERSION = "valdrix.enforcement.policy.v1"

Mode = Literal["shadow", "soft", "hard"]
Permission = Literal["approve:prod", "approve:nonprod"]
Role = Literal["owner", "admin", "member"]
RiskLevel = Literal["low", "medium", "high"]
# Money in a policy is a 4-dp Decimal, serialised as a string so the document hash is exact.
PolicyMoney = Annotated[Amount, PlainSerializer(lambda v: str(monthly(v)), return_type=str)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceModes(_Closed):
    default: Mode = "soft"
    prod: Mode = "soft"
    nonprod: Mode = "soft"


class ModeMatrix(_Closed):
    terraform: SourceModes = SourceModes()
    k8s_admission: SourceModes = SourceModes()
    cloud_event: SourceModes = SourceModes()


class EnvironmentFlags(_Closed):
    default: StrictBool
    prod: StrictBool
    nonprod: StrictBool


class RoutingRule(_Closed):
    rule_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    enabled: StrictBool = True
    environments: tuple[str, ...] = ()
    action_prefixes: tuple[str, ...] = ()
    min_monthly_delta_usd: PolicyMoney | None = None
    max_monthly_delta_usd: PolicyMoney | None = None
    risk_levels: tuple[RiskLevel, ...] = ()
    required_permission: Permission
    allowed_reviewer_roles: tuple[Role, ...] = ("owner", "admin")
    require_requester_reviewer_separation: StrictBool | None = None

    @field_validator("environments")
    @classmethod
    def _known_envs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_environment(v) for v in value)

    @field_validator("action_prefixes")
    @classmethod
    def _lower_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in value if v.strip())

    @field_validator("allowed_reviewer_roles")
    @classmethod
    def _some_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("allowed_reviewer_roles must name at least one role")
        return value

    @model_validator(mode="after")
    def _range(self) -> RoutingRule:
        lo, hi = self.min_monthly_delta_usd, self.max_monthly_delta_usd
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_monthly_delta_usd must not exceed max_monthly_delta_usd")
        return self


class Approval(_Closed):
    require_approval: EnvironmentFlags = EnvironmentFlags(default=False, prod=True, nonprod=False)
    requester_reviewer_separation: EnvironmentFlags = EnvironmentFlags(default=False, prod=True, nonprod=False)
    routing_rules: tuple[RoutingRule, ...] = Field(default=(), max_length=64)
    # How long a pending approval holds its decision's reservation while it waits for a reviewer; then it
    # expires and the reservation is released. None: execution.default_ttl_seconds (the token's lifetime).
    pending_ttl_seconds: int | None = Field(default=None, ge=60, le=604800, strict=True)

    @field_validator("routing_rules")
    @classmethod
    def _unique_ids(cls, value: tuple[RoutingRule, ...]) -> tuple[RoutingRule, ...]:
        seen: set[str] = set()
        for rule in value:
            key = rule.rule_id.lower()
            if key in seen:
                raise ValueError(f"duplicate rule_id {rule.rule_id!r}")
            seen.add(key)
        return value


class Entitlements(_Closed):
    plan_monthly_ceiling_usd: PolicyMoney | None = None
    enterprise_monthly_ceiling_usd: PolicyMoney | None = None
    auto_approve_below_monthly_usd: PolicyMoney = Decimal("25")
    hard_deny_above_monthly_usd: PolicyMoney = Decimal("5000")
    # What a request whose cost estimate left resources unpriced (metadata `pricing.unpriced_count` > 0)
    # becomes: `ignore` prices them at nothing; `escalate` asks a reviewer (shadow only records it);
    # `deny` treats them as a policy violation of the mode (shadow allows, soft escalates, hard denies).
    unpriced_resources: Literal["ignore", "escalate", "deny"] = "escalate"
    # What a cost increase for a project no budget governs (neither its own nor `default`) becomes when the
    # tenant has budgets: a mistyped project id would otherwise be unbounded. Same meanings as above, with
    # `allow` in place of `ignore`; a tenant without any budget is not affected.
    unbudgeted_projects: Literal["allow", "escalate", "deny"] = "escalate"

    @model_validator(mode="after")
    def _ordering(self) -> Entitlements:
        if self.hard_deny_above_monthly_usd <= 0:
            raise ValueError("hard_deny_above_monthly_usd must be greater than 0")
        if self.auto_approve_below_monthly_usd > self.hard_deny_above_monthly_usd:
            raise ValueError("auto_approve_below_monthly_usd must not exceed hard_deny_above_monthly_usd")
        return self


class Execution(_Closed):
    default_ttl_seconds: int = Field(default=900, ge=60, le=86400, strict=True)


def _quantity(value: str) -> str:
    try:
        amount = parse_quantity(value)
    except PricingError as exc:
        raise ValueError(str(exc)) from None
    if amount < 0:
        raise ValueError(f"quantity {value!r} must not be negative")
    return value


# A Kubernetes quantity ("250m", "0.5", "512Mi"), kept as written so the document hash is what was stored.
KubernetesQuantity = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_quantity)]


class ContainerResources(_Closed):
    cpu: KubernetesQuantity = "100m"
    memory: KubernetesQuantity = "128Mi"


class Kubernetes(_Closed):
    # What the admission pricer assumes for a container that names neither a request nor a limit for cpu or
    # memory, when its namespace's LimitRange is not mirrored into the price book (docs/kubernetes-pricing.md).
    # Such decisions carry the reason `container_resources_defaulted`.
    default_container_resources: ContainerResources = ContainerResources()
    # Off by default. On: a priced change to an object without a `valdrix.io/project-id` label or annotation
    # is a policy violation of the mode (reason project_id_missing; hard mode denies). Enforceable in the API
    # server too: `valdrix policy render --format validating-admission-policy`.
    require_project_id: StrictBool = False


class PolicyDocument(_Closed):
    schema_version: Literal["valdrix.enforcement.policy.v1"] = "valdrix.enforcement.policy.v1"
    mode_matrix: ModeMatrix = ModeMatrix()
    approval: Approval = Approval()
    entitlements: Entitlements = Entitlements()
    execution: Execution = Execution()
    kubernetes: Kubernetes = Kubernetes()
    # How budget headroom is measured: active reservations only, or forecast spend plus reservations.
    budget_basis: Literal["reservations", "forecast"] = "reservations"

    def pending_ttl_seconds(self) -> int:
        """Return how long a pending approval holds its reservation before it expires."""
        return self.approval.pending_ttl_seconds or self.execution.default_ttl_seconds

    def canonical(self) -> dict[str, object]:
        """Return the document as canonical plain JSON data (money as 4-dp strings)."""
        return self.model_dump(mode="json")

    def sha256(self) -> str:
        """Return the SHA-256 of the canonical document."""
        return sha256_hex(self.canonical())


class PolicyVersionOut(_Closed):
    version: int
    schema_version: str
    sha256: str
    created_at: datetime
    created_by: uuid.UUID | None
    document: dict[str, Any]


class PolicyPutOut(PolicyVersionOut):
    changed: bool


class PolicyVersionList(_Closed):
    items: list[PolicyVersionOut]
