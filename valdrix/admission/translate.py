"""AdmissionRequest → what the gate must do with it: answer at once (no cost), refuse (unpriceable), or decide.

Pure: the price book, cluster name and namespace maps come in as arguments; nothing here reads a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from valdrix.admission.schemas import AdmissionRequest
from valdrix.decisions import engine
from valdrix.money import HOURS_PER_MONTH
from valdrix.policies.schemas import PolicyDocument
from valdrix.pricing.kubernetes import (
    ContainerDefaults,
    CostDelta,
    PriceBook,
    PricingError,
    parse_quantity,
    price_change,
)

PROJECT_KEY = "valdrix.io/project-id"
ENVIRONMENT_KEY = "valdrix.io/environment"
SOURCE = "k8s_admission"


@dataclass(frozen=True)
class ClusterMap:
    """Where a cluster's namespaces belong when the objects themselves do not say."""

    cluster: str
    namespace_projects: Mapping[str, str]
    namespace_environments: Mapping[str, str]


@dataclass(frozen=True)
class Fast:
    """Allowed without a decision: `why` is the fast-path rule that applied."""

    why: str
    delta: CostDelta | None = None


@dataclass(frozen=True)
class Refused:
    """Rejected without a decision: the object cannot be priced (`message` says which field and why)."""

    message: str


@dataclass(frozen=True)
class Priced:
    """A cost increase the gate must decide on."""

    inp: engine.DecisionInput
    delta: CostDelta


@dataclass(frozen=True)
class ScaleUp:
    """A `scale` subresource raising replicas: the Scale object carries no pod template, so the per-replica
    price must come from the last decision on the scaled workload (`reference`)."""

    reference: str
    old_replicas: int
    new_replicas: int


@dataclass(frozen=True)
class NeedsDefaults:
    """Containers name no cpu/memory request or limit and their namespace mirrors no LimitRange: the price
    depends on the tenant's policy defaults, so translate again with them once the caller is known."""

    containers: int


Outcome = Fast | Refused | Priced | ScaleUp | NeedsDefaults


def container_defaults(policy: PolicyDocument) -> ContainerDefaults:
    """Return the policy's `kubernetes.default_container_resources` as pricer input."""
    resources = policy.kubernetes.default_container_resources
    return ContainerDefaults(parse_quantity(resources.cpu), parse_quantity(resources.memory))


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _string_map(meta: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = meta.get(key)
    return value if isinstance(value, Mapping) else {}


def _tagged(meta: Mapping[str, Any], key: str) -> str | None:
    for source in (_string_map(meta, "annotations"), _string_map(meta, "labels")):
        value = source.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def subject(req: AdmissionRequest) -> Mapping[str, Any] | None:
    """Return the object the request is about: the new object, or the old one for DELETE."""
    return req.object if req.object is not None else req.old_object


def reference(req: AdmissionRequest) -> str:
    """Return `<resource>/<namespace>/<name>`; a generateName-only object is `<generateName>*`."""
    meta = _meta(subject(req))
    namespace = req.namespace or (meta.get("namespace") if isinstance(meta.get("namespace"), str) else None)
    name = req.name or (meta.get("name") if isinstance(meta.get("name"), str) else None)
    if not name:
        generate = meta.get("generateName")
        name = f"{generate}*" if isinstance(generate, str) and generate else "unnamed"
    return f"{req.resource.resource.lower()}/{namespace or 'default'}/{name}"


def _replicas(obj: Mapping[str, Any] | None) -> int:
    spec = (obj or {}).get("spec")
    value = spec.get("replicas") if isinstance(spec, Mapping) else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PricingError(f"spec.replicas must be a non-negative integer, got {value!r}")
    return value


def decision_input(req: AdmissionRequest, where: ClusterMap, monthly_delta: Decimal, hourly_delta: Decimal,
                   breakdown: dict[str, Any], defaulted_containers: int = 0) -> engine.DecisionInput:
    """Return the gate input for a priced request (project/environment resolved as the runbook says)."""
    meta = _meta(subject(req))
    namespace = req.namespace or str(meta.get("namespace") or "default")
    project = _tagged(meta, PROJECT_KEY) or where.namespace_projects.get(namespace) or namespace
    environment = _tagged(meta, ENVIRONMENT_KEY) or where.namespace_environments.get(namespace) or "nonprod"
    metadata: dict[str, Any] = {
        "resource_type": req.kind.kind.lower(),
        "admission_kind": req.kind.kind,
        "admission_group_version": f"{req.kind.group}/{req.kind.version}".lstrip("/"),
        "admission_operation": req.operation,
        "admission_sub_resource": req.sub_resource,
        "admission_user": req.user_info.username,
        "admission_namespace": namespace,
        "k8s_cluster": where.cluster,
        "cost_breakdown": breakdown,
    }
    if defaulted_containers:
        # Read by the engine: the decision carries the reason container_resources_defaulted.
        metadata["pricing"] = {"defaulted_containers": defaulted_containers}
    if _tagged(meta, PROJECT_KEY) is None:
        # Read by the engine when the policy requires a declared project (reason project_id_missing).
        metadata["project_declared"] = False
    return engine.make_input(source=SOURCE, project_id=project, environment=environment,
                             action=f"admission.{req.operation.lower()}", resource_reference=reference(req),
                             monthly_delta=monthly_delta, hourly_delta=hourly_delta, metadata=metadata,
                             dry_run=bool(req.dry_run))


def translate(req: AdmissionRequest, book: PriceBook, where: ClusterMap,
              defaults: ContainerDefaults | None = None) -> Outcome:
    """Return what to do with one admission request (never raises for a malformed object: that is Refused).

    Without `defaults` (the tenant's policy is not known yet), a change whose price depends on them is
    NeedsDefaults.
    """
    if req.operation in ("DELETE", "CONNECT"):
        return Fast(req.operation.lower())
    if req.sub_resource == "status":
        # The status subresource cannot change a spec, so it cannot change what the object costs.
        return Fast("status_subresource")
    try:
        if req.kind.kind == "Scale":
            old, new = _replicas(req.old_object), _replicas(req.object)
            if new <= old:
                return Fast("non_positive_delta")
            return ScaleUp(reference(req), old, new)
        delta = price_change(req.operation, req.object, req.old_object, book, cluster=where.cluster,
                             defaults=defaults, namespace=req.namespace)
    except PricingError as exc:
        return Refused(str(exc))
    if not delta.cost_impact:
        return Fast("no_cost_impact", delta)
    if any(cost is not None and cost.owned_by_controller for cost in (delta.before, delta.after)) \
            and not delta.overridden:
        # A controller-made pod (ReplicaSet → Pod) is already paid for by its owner's decision.
        return Fast("owned_by_controller", delta)
    if delta.needs_defaults:
        # Pricing such a container at 0 would let a workload without requests past the gate for free.
        return NeedsDefaults(max((cost.unresourced_containers for cost in (delta.before, delta.after) if cost),
                                 default=0))
    if delta.monthly_delta_usd <= 0 and delta.hourly_delta_usd <= 0:
        return Fast("non_positive_delta", delta)
    return Priced(decision_input(req, where, delta.monthly_delta_usd, delta.hourly_delta_usd, delta.breakdown(),
                                 delta.defaulted_containers), delta)


def scale_input(req: AdmissionRequest, where: ClusterMap, change: ScaleUp,
                per_replica_monthly: Decimal | None) -> engine.DecisionInput:
    """Return the gate input for a scale-up priced at `per_replica_monthly` (0 with a note when unknown)."""
    per_replica = per_replica_monthly if per_replica_monthly is not None else Decimal(0)
    added = change.new_replicas - change.old_replicas
    monthly_delta = per_replica * added
    breakdown = {"monthly_delta_usd": str(monthly_delta), "per_replica_monthly_usd": str(per_replica),
                 "old_replicas": change.old_replicas, "new_replicas": change.new_replicas,
                 "notes": [] if per_replica_monthly is not None else
                 [f"no earlier decision prices one replica of {change.reference}; scale-up priced at 0"]}
    return decision_input(req, where, monthly_delta, monthly_delta / HOURS_PER_MONTH, breakdown)
