"""Pure estimator of what Kubernetes objects cost per month, priced from their specs (OpenCost-style).

Pods are priced by their effective resource *requests* (limits where requests are absent, as the API
server defaults them) at per-vCPU-hour, per-GiB-hour and per-GPU-hour rates, then multiplied by how many
pods the object keeps running and for how long. Volumes are priced per GiB-month, LoadBalancer Services
at a flat monthly price. The rates come from a `PriceBook`; its file format is documented in
docs/kubernetes-pricing.md. Nothing here reads the clock, the network or a database: the only I/O is
`PriceBook.load`.

Every "monthly" amount is USD per 730-hour month. `hourly_usd` is always monthly / 730, so for a Job
(a one-off run) it is the run's cost spread over a month rather than its burn rate while running.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from valdrix.canonical import sha256_hex
from valdrix.money import HOURS_PER_MONTH, MAX_AMOUNT, hourly, monthly, parse_amount

ANNOTATION_MONTHLY = "valdrix.io/estimated-monthly-delta-usd"
ANNOTATION_HOURLY = "valdrix.io/estimated-hourly-delta-usd"
ANNOTATION_RUNTIME = "valdrix.io/estimated-runtime-hours"
BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"

ZERO = Decimal(0)
ONE = Decimal(1)
GIB = Decimal(1024**3)
# Kubernetes stores quantities as int64-scaled values; anything larger is not a real request.
_MAX_QUANTITY = Decimal(2**63 - 1)
# spec.replicas is an int32 in every workload API.
_MAX_REPLICAS = 2**31 - 1
_MONTHS_PER_YEAR = 12

_WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"})
# Resources a container without a request or limit is given one for (LimitRange, then policy defaults).
DEFAULTED_RESOURCES = ("cpu", "memory")

# The API resources whose objects this module prices, as (API group, resource) -> kind: what an admission
# webhook or policy must intercept and nothing more. `*/scale` subresources carry a `Scale` object.
PRICED_RESOURCES: Mapping[tuple[str, str], str] = MappingProxyType({
    ("", "pods"): "Pod",
    ("", "services"): "Service",
    ("", "persistentvolumeclaims"): "PersistentVolumeClaim",
    ("", "replicationcontrollers"): "ReplicationController",
    ("", "replicationcontrollers/scale"): "Scale",
    ("apps", "deployments"): "Deployment",
    ("apps", "deployments/scale"): "Scale",
    ("apps", "statefulsets"): "StatefulSet",
    ("apps", "statefulsets/scale"): "Scale",
    ("apps", "replicasets"): "ReplicaSet",
    ("apps", "replicasets/scale"): "Scale",
    ("apps", "daemonsets"): "DaemonSet",
    ("batch", "jobs"): "Job",
    ("batch", "cronjobs"): "CronJob",
    ("autoscaling", "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
})


class PricingError(ValueError):
    """An object (or price book) that cannot be priced; the message names the field and the problem."""


class PriceBookError(PricingError):
    """A price book that fails validation or cannot be read."""


# --------------------------------------------------------------------------------------------------
# Price book


def _exact_decimal(value: object) -> object:
    # YAML reads an unquoted 0.1 as a binary float; repr() recovers the literal the operator wrote.
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    if isinstance(value, float):
        return repr(value)
    return value


Price = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]


class NodePoolRates(BaseModel):
    """Rates for pods scheduled onto one node pool; unset fields fall back to the cluster's rates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_per_vcpu_hour: Price | None = None
    memory_per_gib_hour: Price | None = None
    gpu_per_gpu_hour: Price | None = None


def _quantity_value(value: object) -> object:
    parse_quantity(value)  # raises PricingError (a ValueError) with the offending literal
    return value


Quantity = Annotated[str | int | float, BeforeValidator(_quantity_value)]


class LimitRangeDefaults(BaseModel):
    """A namespace's LimitRange `type: Container` defaults, mirrored by the operator (field names as in Kubernetes).

    For a container that names neither a request nor a limit for cpu or memory, the API server sets the
    request from `defaultRequest`, else from `default` (the default limit, which a missing request copies).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaultRequest: dict[str, Quantity] = Field(default_factory=dict)
    default: dict[str, Quantity] = Field(default_factory=dict)

    def requests(self) -> Mapping[str, Decimal]:
        """Return the request the API server gives a container that sets none, per defaulted resource."""
        out = {}
        for name in DEFAULTED_RESOURCES:
            for source in (self.defaultRequest, self.default):
                if name in source:
                    out[name] = parse_quantity(source[name])
                    break
        return MappingProxyType(out)


class _ScopeFile(NodePoolRates):
    storage_per_gib_month: Price | None = None
    load_balancer_per_month: Price | None = None
    daemonset_node_count: Annotated[int, Field(ge=0, le=100_000, strict=True)] | None = None
    job_runtime_hours: Price | None = None
    gpu_resources: list[Annotated[str, Field(min_length=1)]] | None = None
    node_pool_label_keys: list[Annotated[str, Field(min_length=1)]] | None = None
    default_storage_class: str | None = None
    storage_classes: dict[str, Price] = Field(default_factory=dict)
    node_pools: dict[str, NodePoolRates] = Field(default_factory=dict)
    limit_ranges: dict[str, LimitRangeDefaults] = Field(default_factory=dict)


class _BookFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    defaults: _ScopeFile
    clusters: dict[str, _ScopeFile] = Field(default_factory=dict)


_REQUIRED_DEFAULTS = ("cpu_per_vcpu_hour", "memory_per_gib_hour", "gpu_per_gpu_hour", "storage_per_gib_month",
                      "load_balancer_per_month", "daemonset_node_count", "job_runtime_hours", "gpu_resources",
                      "node_pool_label_keys")


@dataclass(frozen=True)
class Rates:
    """Compute rates in USD: per vCPU-hour, per GiB-hour of memory, per GPU-hour."""

    cpu_per_vcpu_hour: Decimal
    memory_per_gib_hour: Decimal
    gpu_per_gpu_hour: Decimal

    def overlaid(self, pool: NodePoolRates) -> Rates:
        """Return these rates with the node pool's set fields taking precedence."""
        return Rates(
            pool.cpu_per_vcpu_hour if pool.cpu_per_vcpu_hour is not None else self.cpu_per_vcpu_hour,
            pool.memory_per_gib_hour if pool.memory_per_gib_hour is not None else self.memory_per_gib_hour,
            pool.gpu_per_gpu_hour if pool.gpu_per_gpu_hour is not None else self.gpu_per_gpu_hour,
        )


@dataclass(frozen=True)
class ClusterPrices:
    """Fully resolved prices and assumptions for one cluster (defaults merged with its overrides)."""

    rates: Rates
    storage_per_gib_month: Decimal
    load_balancer_per_month: Decimal
    daemonset_node_count: int
    job_runtime_hours: Decimal
    gpu_resources: frozenset[str]
    node_pool_label_keys: tuple[str, ...]
    default_storage_class: str | None
    storage_classes: Mapping[str, Decimal]
    node_pools: Mapping[str, NodePoolRates]
    # namespace -> the request its LimitRange gives a container that sets none, per resource
    limit_ranges: Mapping[str, Mapping[str, Decimal]] = field(default_factory=lambda: MappingProxyType({}))


def _resolve_scope(scope: _ScopeFile, base: ClusterPrices | None) -> ClusterPrices:
    def pick(name: str) -> Any:
        value = getattr(scope, name)
        return value if value is not None or base is None else getattr(base, name, None)

    base_rates = base.rates if base is not None else None
    rates = Rates(
        *(getattr(scope, n) if getattr(scope, n) is not None else getattr(base_rates, n)
          for n in ("cpu_per_vcpu_hour", "memory_per_gib_hour", "gpu_per_gpu_hour"))
    )
    storage_classes = {**(base.storage_classes if base else {}), **scope.storage_classes}
    node_pools = {**(base.node_pools if base else {}), **scope.node_pools}
    limit_ranges = {**(base.limit_ranges if base else {}),
                    **{namespace: lr.requests() for namespace, lr in scope.limit_ranges.items()}}
    return ClusterPrices(
        rates=rates,
        storage_per_gib_month=pick("storage_per_gib_month"),
        load_balancer_per_month=pick("load_balancer_per_month"),
        daemonset_node_count=pick("daemonset_node_count"),
        job_runtime_hours=pick("job_runtime_hours"),
        gpu_resources=frozenset(pick("gpu_resources")),
        node_pool_label_keys=tuple(pick("node_pool_label_keys")),
        default_storage_class=pick("default_storage_class"),
        storage_classes=MappingProxyType(storage_classes),
        node_pools=MappingProxyType(node_pools),
        limit_ranges=MappingProxyType(limit_ranges),
    )


@dataclass(frozen=True)
class PriceBook:
    """Validated Kubernetes prices: defaults plus per-cluster overrides; `digest` identifies the content."""

    defaults: ClusterPrices
    clusters: Mapping[str, ClusterPrices]
    digest: str

    def __hash__(self) -> int:
        # The mapping fields are unhashable; the digest identifies the content.
        return hash(self.digest)

    @classmethod
    def load(cls, path: Path | None = None) -> PriceBook:
        """Return the book in the YAML file at `path` (None: the packaged default); raise PriceBookError."""
        try:
            if path is None:
                text = resources.files("valdrix.pricing").joinpath("data/kubernetes_prices.yaml").read_text(
                    encoding="utf-8")
            else:
                text = Path(path).read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise PriceBookError(f"price book {path or 'default'} cannot be read: {exc}") from exc
        if not isinstance(data, Mapping):
            raise PriceBookError(f"price book {path or 'default'} must be a YAML mapping")
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceBook:
        """Return the book described by `data` (the YAML file's content); raise PriceBookError if invalid."""
        if not isinstance(data, Mapping):
            raise PriceBookError("price book must be a mapping")
        try:
            parsed = _BookFile.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
            )
            raise PriceBookError(f"invalid price book: {problems}") from None
        missing = [name for name in _REQUIRED_DEFAULTS if getattr(parsed.defaults, name) is None]
        if missing:
            raise PriceBookError(f"invalid price book: defaults must set {', '.join(missing)}")
        defaults = _resolve_scope(parsed.defaults, None)
        clusters = {name: _resolve_scope(scope, defaults) for name, scope in parsed.clusters.items()}
        return cls(defaults, MappingProxyType(clusters), sha256_hex(parsed.model_dump(mode="json")))

    def for_cluster(self, cluster: str) -> ClusterPrices:
        """Return the resolved prices for `cluster` (the defaults when it has no overrides)."""
        return self.clusters.get(cluster, self.defaults)


# --------------------------------------------------------------------------------------------------
# Quantities and defensive accessors

# Mantissa, then either a decimal exponent (tried first, so "1E3" is 1000) or a suffix ("1E" is exa).
_QUANTITY = re.compile(
    r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE]([+-]?\d{1,3})|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?")
_SUFFIXES: Mapping[str, Decimal] = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal:
    """Return the exact Decimal of a Kubernetes quantity ("100m", "1.5Gi", "1e3"); raise PricingError."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PricingError(f"invalid quantity {value!r}: expected a string or number")
    # YAML turns `cpu: 0.15` into a float; repr() gives back the literal digits.
    text = repr(value) if isinstance(value, float) else str(value)
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise PricingError(f"invalid quantity {value!r}")
    number = Decimal(match.group(1))
    if match.group(2) is not None:
        number = number.scaleb(int(match.group(2)))
    elif match.group(3) is not None:
        number *= _SUFFIXES[match.group(3)]
    if abs(number) > _MAX_QUANTITY:
        raise PricingError(f"quantity {value!r} is out of range")
    return number


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PricingError(f"{path} must be an object, got {type(value).__name__}")
    return value


def _opt_mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return {} if value is None else _mapping(value, f"{path}.{key}")


def _opt_list(parent: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
    value = parent.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PricingError(f"{path}.{key} must be a list, got {type(value).__name__}")
    return value


def _opt_int(parent: Mapping[str, Any], key: str, path: str, default: int) -> int:
    value = parent.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_REPLICAS:
        raise PricingError(f"{path}.{key} must be an integer between 0 and {_MAX_REPLICAS}, got {value!r}")
    return value


def _opt_str(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise PricingError(f"{path}.{key} must be a string, got {type(value).__name__}")
    return value


def _annotations(obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    return _opt_mapping(_opt_mapping(obj, "metadata", path), "annotations", f"{path}.metadata")


def _annotation_amount(annotations: Mapping[str, Any], name: str) -> Decimal | None:
    raw = annotations.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise PricingError(f"annotation {name} must be a string, got {type(raw).__name__}")
    try:
        value = parse_amount(raw)
    except ValueError as exc:
        raise PricingError(f"annotation {name}={raw!r} is not a valid amount: {exc}") from None
    if value < 0:
        raise PricingError(f"annotation {name}={raw!r} must not be negative")
    return value


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ContainerCost:
    """One line of a pod's cost: a container, a sidecar, the init-container excess, or the pod overhead."""

    name: str
    role: Literal["container", "sidecar", "init", "overhead"]
    cpu_cores: Decimal
    memory_gib: Decimal
    gpus: Decimal
    replicas: Decimal
    hourly_usd: Decimal
    monthly_usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        """Return this line as JSON-ready data (Decimals as strings)."""
        return {"name": self.name, "role": self.role, "cpu_cores": str(self.cpu_cores),
                "memory_gib": str(self.memory_gib), "gpus": str(self.gpus), "replicas": str(self.replicas),
                "hourly_usd": str(self.hourly_usd), "monthly_usd": str(self.monthly_usd)}


@dataclass(frozen=True)
class ObjectCost:
    """Estimated cost of one object; `pod_monthly_usd` is one replica's cost, `replicas` the pod count."""

    monthly_usd: Decimal
    hourly_usd: Decimal
    cost_impact: bool
    kind: str
    containers: tuple[ContainerCost, ...]
    replicas: Decimal
    floor_monthly_usd: Decimal | None
    owned_by_controller: bool
    notes: tuple[str, ...]
    pod_monthly_usd: Decimal = ZERO
    storage_monthly_usd: Decimal = ZERO
    # Containers priced at a default cpu/memory request (LimitRange or policy), and those left without one.
    defaulted_containers: int = 0
    unresourced_containers: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return this cost as JSON-ready data (Decimals as strings)."""
        return {
            "kind": self.kind, "monthly_usd": str(self.monthly_usd), "hourly_usd": str(self.hourly_usd),
            "cost_impact": self.cost_impact, "replicas": str(self.replicas),
            "pod_monthly_usd": str(self.pod_monthly_usd),
            "storage_monthly_usd": str(self.storage_monthly_usd),
            "floor_monthly_usd": None if self.floor_monthly_usd is None else str(self.floor_monthly_usd),
            "owned_by_controller": self.owned_by_controller,
            "defaulted_containers": self.defaulted_containers,
            "containers": [line.as_dict() for line in self.containers], "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CostDelta:
    """Cost change of one admission request: after - before, or the annotation override when `overridden`."""

    monthly_delta_usd: Decimal
    hourly_delta_usd: Decimal
    before: ObjectCost | None
    after: ObjectCost | None
    overridden: bool
    cost_impact: bool
    notes: tuple[str, ...]

    @property
    def defaulted_containers(self) -> int:
        """Containers of the new object priced at a default request (0 when an annotation overrides)."""
        return 0 if self.overridden or self.after is None else self.after.defaulted_containers

    @property
    def needs_defaults(self) -> bool:
        """True when a container was left without a cpu/memory request because no defaults were given."""
        return not self.overridden and any(
            cost.unresourced_containers for cost in (self.before, self.after) if cost is not None)

    def breakdown(self) -> dict[str, Any]:
        """Return the delta with its before/after breakdown as JSON-ready data (Decimals as strings)."""
        return {
            "monthly_delta_usd": str(self.monthly_delta_usd), "hourly_delta_usd": str(self.hourly_delta_usd),
            "overridden": self.overridden, "cost_impact": self.cost_impact, "notes": list(self.notes),
            "before": None if self.before is None else self.before.as_dict(),
            "after": None if self.after is None else self.after.as_dict(),
        }


# --------------------------------------------------------------------------------------------------
# Pods


@dataclass(frozen=True)
class _Req:
    cpu: Decimal = ZERO
    memory: Decimal = ZERO  # bytes
    gpu: Decimal = ZERO

    def __add__(self, other: _Req) -> _Req:
        return _Req(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def max(self, other: _Req) -> _Req:
        return _Req(max(self.cpu, other.cpu), max(self.memory, other.memory), max(self.gpu, other.gpu))

    def excess_over(self, other: _Req) -> _Req:
        return _Req(max(self.cpu - other.cpu, ZERO), max(self.memory - other.memory, ZERO),
                    max(self.gpu - other.gpu, ZERO))

    def hourly(self, rates: Rates) -> Decimal:
        return (self.cpu * rates.cpu_per_vcpu_hour + self.memory / GIB * rates.memory_per_gib_hour
                + self.gpu * rates.gpu_per_gpu_hour)


def _resource_amount(resources_: Mapping[str, Any], name: str, path: str) -> Decimal:
    try:
        value = parse_quantity(resources_[name])
    except PricingError as exc:
        raise PricingError(f"{path}.{name}: {exc}") from None
    if value < 0:
        raise PricingError(f"{path}.{name} must not be negative")
    return value


def _request_of(sources: Sequence[tuple[Mapping[str, Any], str]], gpu_names: frozenset[str]) -> _Req:
    """Return the request taking each resource from the first source (mapping, path) that names it."""

    def amount(name: str) -> Decimal:
        for values, path in sources:
            if name in values:
                return _resource_amount(values, name, path)
        return ZERO

    return _Req(amount("cpu"), amount("memory"), sum((amount(n) for n in sorted(gpu_names)), ZERO))


@dataclass(frozen=True)
class ContainerDefaults:
    """What a container that names neither a request nor a limit for cpu or memory is priced at, when its
    namespace has no mirrored LimitRange for it: the policy's `kubernetes.default_container_resources`."""

    cpu: Decimal  # cores
    memory: Decimal  # bytes


@dataclass(frozen=True)
class _Fill:
    """Where missing cpu/memory requests come from: the namespace's LimitRange, then the policy defaults."""

    limit_range: Mapping[str, Decimal]
    policy: ContainerDefaults | None


@dataclass(frozen=True)
class _Container:
    name: str
    spec: Mapping[str, Any]
    req: _Req
    defaulted: tuple[str, ...] = ()  # "cpu (LimitRange)", "memory (policy default)"
    missing: tuple[str, ...] = ()  # resources left at 0 because no default was given


def _container_request(resource_map: Mapping[str, Any], path: str, gpu_names: frozenset[str],
                       fill: _Fill) -> tuple[_Req, tuple[str, ...], tuple[str, ...]]:
    # The API server copies a limit into a missing request, so a limits-only container requests its limit.
    sources = [(_opt_mapping(resource_map, "requests", path), f"{path}.requests"),
               (_opt_mapping(resource_map, "limits", path), f"{path}.limits")]
    named = _request_of(sources, gpu_names)
    amounts = {"cpu": named.cpu, "memory": named.memory}
    defaulted: list[str] = []
    missing: list[str] = []
    for resource in DEFAULTED_RESOURCES:
        if any(resource in values for values, _ in sources):
            continue
        if resource in fill.limit_range:
            amounts[resource] = fill.limit_range[resource]
            defaulted.append(f"{resource} (LimitRange)")
        elif fill.policy is not None:
            amounts[resource] = getattr(fill.policy, resource)
            defaulted.append(f"{resource} (policy default)")
        else:
            missing.append(resource)
    return _Req(amounts["cpu"], amounts["memory"], named.gpu), tuple(defaulted), tuple(missing)


def _container_requests(pod_spec: Mapping[str, Any], key: str, path: str, gpu_names: frozenset[str],
                        fill: _Fill) -> list[_Container]:
    out = []
    for index, raw in enumerate(_opt_list(pod_spec, key, path)):
        cpath = f"{path}.{key}[{index}]"
        container = _mapping(raw, cpath)
        name = _opt_str(container, "name", cpath) or f"#{index}"
        req, defaulted, missing = _container_request(_opt_mapping(container, "resources", cpath),
                                                     f"{cpath}.resources", gpu_names, fill)
        out.append(_Container(name, container, req, defaulted, missing))
    return out


def _node_pool(pod_spec: Mapping[str, Any], prices: ClusterPrices) -> tuple[str, str] | None:
    """Return (label key, pool name) the pod pins itself to via nodeSelector or required node affinity."""
    selector = pod_spec.get("nodeSelector")
    if isinstance(selector, Mapping):
        for key in prices.node_pool_label_keys:
            if isinstance(selector.get(key), str):
                return key, selector[key]
    # Karpenter users usually pin pools with affinity; only an unambiguous single-value `In` counts.
    terms = _dig(pod_spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                 "nodeSelectorTerms")
    if isinstance(terms, list) and len(terms) == 1 and isinstance(terms[0], Mapping):
        expressions = terms[0].get("matchExpressions")
        for expr in expressions if isinstance(expressions, list) else ():
            if (isinstance(expr, Mapping) and expr.get("key") in prices.node_pool_label_keys
                    and expr.get("operator") == "In" and isinstance(expr.get("values"), list)
                    and len(expr["values"]) == 1 and isinstance(expr["values"][0], str)):
                return str(expr["key"]), expr["values"][0]
    return None


def _dig(value: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


@dataclass(frozen=True)
class _Line:
    name: str
    role: Literal["container", "sidecar", "init", "overhead"]
    req: _Req
    hourly: Decimal


@dataclass(frozen=True)
class _PodPrice:
    hourly: Decimal
    lines: tuple[_Line, ...]
    notes: tuple[str, ...]
    defaulted: int = 0  # containers given a default cpu/memory request
    unresourced: int = 0  # containers left without one (no default was given)


def _price_pod(pod_spec: Mapping[str, Any], prices: ClusterPrices, path: str, fill: _Fill) -> _PodPrice:
    notes: list[str] = []
    rates = prices.rates
    pool = _node_pool(pod_spec, prices)
    if pool is not None:
        key, name = pool
        if name in prices.node_pools:
            rates = rates.overlaid(prices.node_pools[name])
            notes.append(f"node pool {name} ({key}) rates")
        else:
            notes.append(f"node pool {name} ({key}) has no price override; cluster rates used")
    gpu_names = prices.gpu_resources
    apps = _container_requests(pod_spec, "containers", path, gpu_names, fill)
    if not apps:
        raise PricingError(f"{path}.containers must list at least one container")
    # Effective pod request per resource (Kubernetes PodRequests): sidecars (init containers with
    # restartPolicy Always) run alongside the app containers; each ordinary init container runs alone
    # next to the sidecars started before it; the pod reserves the larger of the two phases.
    sidecar_total = _Req()
    init_peak = _Req()
    sidecars: list[tuple[str, _Req]] = []
    inits = _container_requests(pod_spec, "initContainers", path, gpu_names, fill)
    for init in inits:
        if init.spec.get("restartPolicy") == "Always":
            sidecar_total += init.req
            sidecars.append((init.name, init.req))
            init_peak = init_peak.max(sidecar_total)
        else:
            init_peak = init_peak.max(init.req + sidecar_total)
    running = sum((c.req for c in apps), _Req()) + sidecar_total
    lines = [_Line(c.name, "container", c.req, c.req.hourly(rates)) for c in apps]
    lines += [_Line(name, "sidecar", req, req.hourly(rates)) for name, req in sidecars]
    excess = init_peak.excess_over(running)
    if excess != _Req():
        lines.append(_Line("(init containers)", "init", excess, excess.hourly(rates)))
        notes.append("init containers request more than the running containers; the excess is priced")
    overhead_map = _opt_mapping(pod_spec, "overhead", path)
    if overhead_map:
        overhead = _request_of([(overhead_map, f"{path}.overhead")], gpu_names)
        lines.append(_Line("(pod overhead)", "overhead", overhead, overhead.hourly(rates)))
    defaulted = [c for c in (*apps, *inits) if c.defaulted]
    for c in defaulted:
        notes.append(f"container {c.name} sets no request or limit for {', '.join(c.defaulted)}; priced at the default")
    unresourced = [c for c in (*apps, *inits) if c.missing]
    if all(line.req == _Req() for line in lines):
        notes.append("no resource requests or limits; compute priced at 0")
    return _PodPrice(sum((line.hourly for line in lines), ZERO), tuple(lines), tuple(notes), len(defaulted),
                     len(unresourced))


def _pod_storage(pod_spec: Mapping[str, Any], prices: ClusterPrices, path: str) -> tuple[Decimal, list[str]]:
    """Return the monthly cost of the generic ephemeral volumes one pod creates, with notes."""
    total, notes = ZERO, []
    for index, raw in enumerate(_opt_list(pod_spec, "volumes", path)):
        volume = _mapping(raw, f"{path}.volumes[{index}]")
        ephemeral = _opt_mapping(volume, "ephemeral", f"{path}.volumes[{index}]")
        if ephemeral:
            vpath = f"{path}.volumes[{index}].ephemeral.volumeClaimTemplate"
            claim = _mapping(ephemeral.get("volumeClaimTemplate"), vpath)
            claim_monthly, note = _price_claim(claim, prices, vpath)
            total += claim_monthly
            notes.append(f"ephemeral volume {note}")
    return total, notes


# --------------------------------------------------------------------------------------------------
# Storage


def _price_claim(claim: Mapping[str, Any], prices: ClusterPrices, path: str) -> tuple[Decimal, str]:
    """Return (monthly cost, explanation) of one claim or claim template: GiB requested x class price."""
    spec = _opt_mapping(claim, "spec", path)
    resources_ = _opt_mapping(spec, "resources", f"{path}.spec")
    requests = _opt_mapping(resources_, "requests", f"{path}.spec.resources")
    if "storage" not in requests:
        raise PricingError(f"{path}.spec.resources.requests.storage is required")
    gib = _resource_amount(requests, "storage", f"{path}.spec.resources.requests") / GIB
    beta = _annotations(claim, path).get(BETA_STORAGE_CLASS)
    # An empty storageClassName means "no class" (static binding): fall through to the annotation/default.
    storage_class = (_opt_str(spec, "storageClassName", f"{path}.spec")
                     or (beta if isinstance(beta, str) and beta else None)
                     or prices.default_storage_class)
    price = prices.storage_per_gib_month
    suffix = ""
    if storage_class is not None:
        if storage_class in prices.storage_classes:
            price = prices.storage_classes[storage_class]
        else:
            suffix = " (class not in price book; default storage price)"
    name = _opt_str(_opt_mapping(claim, "metadata", path), "name", f"{path}.metadata") or "claim"
    return gib * price, f"{name}: {gib} GiB x {price}/GiB-month, class {storage_class or '(none)'}{suffix}"


# --------------------------------------------------------------------------------------------------
# CronJob schedules
#
# Runs per month = runs per matching day x matching days in an average month. Matching days are counted
# over a 365-day year (365 x 24 / 12 = 730 hours per month, the same month as everywhere else) with every
# weekday weighted 1/7, because the real count depends on the calendar year. Day-of-month and day-of-week
# combine like the robfig/cron parser the CronJob controller uses: AND when either field starts with `*`
# or `?`, OR otherwise. Time zones and DST shifts are ignored.

_MACROS: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_MONTH_NAMES = {name: i + 1 for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
_DOW_NAMES = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_CRON_PART = re.compile(r"(\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(\d{1,3}))?")
_EVERY = re.compile(r"@every\s+(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?")


def _cron_field(text: str, low: int, high: int, names: Mapping[str, int],
                what: str) -> tuple[frozenset[int], bool]:
    def number(token: str) -> int:
        if token.upper() in names:
            return names[token.upper()]
        if not token.isdigit():
            raise PricingError(f"cron {what} field has an invalid value {token!r}")
        return int(token)

    values: set[int] = set()
    for part in text.split(","):
        match = _CRON_PART.fullmatch(part)
        if match is None:
            raise PricingError(f"cron {what} field {text!r} is not valid")
        span, step_text = match.groups()
        if span in ("*", "?"):
            first, last = low, high
        elif "-" in span:
            first, last = (number(token) for token in span.split("-"))
        else:
            # robfig/cron reads "N/step" as "N-max/step".
            first = number(span)
            last = high if step_text else first
        step = int(step_text) if step_text else 1
        if step < 1 or not low <= first <= last <= high:
            raise PricingError(f"cron {what} field {text!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values), text.startswith(("*", "?"))


def runs_per_month(schedule: str) -> Decimal:
    """Return the average number of runs per 730-hour month of a CronJob schedule; raise PricingError."""
    text = schedule.strip()
    every = _EVERY.fullmatch(text)
    if every is not None:
        hours, minutes, seconds = (int(part or 0) for part in every.groups())
        period = hours * 3600 + minutes * 60 + seconds
        if period < 1:
            raise PricingError(f"cron schedule {schedule!r} has a zero period")
        return HOURS_PER_MONTH * 3600 / period
    fields = _MACROS.get(text.lower(), text).split()
    if len(fields) != 5:
        raise PricingError(f"cron schedule {schedule!r} must have 5 fields (minute hour day month weekday) "
                           "or be @hourly/@daily/@weekly/@monthly/@yearly/@every")
    minutes_set, _ = _cron_field(fields[0], 0, 59, {}, "minute")
    hours_set, _ = _cron_field(fields[1], 0, 23, {}, "hour")
    doms, dom_star = _cron_field(fields[2], 1, 31, {}, "day-of-month")
    months, _ = _cron_field(fields[3], 1, 12, _MONTH_NAMES, "month")
    dows, dow_star = _cron_field(fields[4], 0, 7, _DOW_NAMES, "day-of-week")
    weekdays = len({day % 7 for day in dows})
    days = [day for month in months for day in range(1, _DAYS_IN_MONTH[month - 1] + 1)]
    dated = sum(1 for day in days if day in doms)
    # Matching days per year x 7, kept integral so the month average needs a single division.
    matching_x7 = dated * weekdays if dom_star or dow_star else 7 * dated + (len(days) - dated) * weekdays
    return Decimal(len(minutes_set) * len(hours_set) * matching_x7) / (7 * _MONTHS_PER_YEAR)


# --------------------------------------------------------------------------------------------------
# Objects


@dataclass(frozen=True)
class _Estimate:
    """Total = pod_monthly x replicas + flat_monthly; storage_monthly is the part of it spent on volumes."""

    pod_monthly: Decimal  # one replica over the object's pod-hours, with the volumes it brings
    pod_hours: Decimal  # hours each replica runs per month
    replicas: Decimal
    lines: tuple[_Line, ...] = ()
    storage_monthly: Decimal = ZERO
    flat_monthly: Decimal = ZERO  # not per replica: a PVC, a load balancer
    floor_monthly: Decimal | None = None
    notes: tuple[str, ...] = ()
    defaulted: int = 0
    unresourced: int = 0


def _pod_template_spec(parent: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    template = parent.get("template")
    if template is None:
        raise PricingError(f"{path}.template is required")
    spec = _mapping(template, f"{path}.template").get("spec")
    if spec is None:
        raise PricingError(f"{path}.template.spec is required")
    return _mapping(spec, f"{path}.template.spec")


def _pods(pod_spec: Mapping[str, Any], replicas: Decimal, pod_hours: Decimal, prices: ClusterPrices,
          fill: _Fill, path: str, notes: Sequence[str] = ()) -> _Estimate:
    pod = _price_pod(pod_spec, prices, path, fill)
    if pod.hourly > MAX_AMOUNT:
        raise PricingError(f"{path}: pod requests cost more than {MAX_AMOUNT} USD per hour")
    ephemeral, storage_notes = _pod_storage(pod_spec, prices, path)
    # Ephemeral volumes live only as long as their pod, so they are prorated like the pod.
    storage = ephemeral * replicas * pod_hours / HOURS_PER_MONTH
    return _Estimate(pod.hourly * pod_hours + ephemeral * pod_hours / HOURS_PER_MONTH, pod_hours, replicas,
                     pod.lines, storage, notes=(*pod.notes, *storage_notes, *notes), defaulted=pod.defaulted,
                     unresourced=pod.unresourced)


def _runtime_hours(sources: Sequence[Mapping[str, Any]], prices: ClusterPrices) -> tuple[Decimal, str]:
    for found in sources:
        if found.get(ANNOTATION_RUNTIME) is not None:
            hours = _annotation_amount(found, ANNOTATION_RUNTIME)
            assert hours is not None
            return hours, f"runtime {hours} h per run from {ANNOTATION_RUNTIME}"
    return prices.job_runtime_hours, f"runtime {prices.job_runtime_hours} h per run (price book default)"


def _job_pods(job_spec: Mapping[str, Any], path: str) -> Decimal:
    parallelism = _opt_int(job_spec, "parallelism", path, 1)
    # Never more pods at once than completions still to do.
    if job_spec.get("completions") is not None:
        parallelism = min(parallelism, _opt_int(job_spec, "completions", path, 1))
    return Decimal(parallelism)


def _target_monthly(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, Decimal) or not value.is_finite() or not ZERO <= value <= MAX_AMOUNT:
        raise PricingError(f"target_pod_monthly must be a finite non-negative Decimal, got {value!r}")
    return value


def _estimate(kind: str, obj: Mapping[str, Any], prices: ClusterPrices, fill: _Fill,
              target_pod_monthly: Decimal | None) -> _Estimate | None:
    """Return the estimate for a priced kind, None for kinds without a direct cost."""
    spec = _opt_mapping(obj, "spec", "object")
    if kind == "Pod":
        return _pods(spec, ONE, HOURS_PER_MONTH, prices, fill, "spec")
    if kind in _WORKLOAD_KINDS:
        replicas = Decimal(_opt_int(spec, "replicas", "spec", 1))
        estimate = _pods(_pod_template_spec(spec, "spec"), replicas, HOURS_PER_MONTH, prices, fill,
                         "spec.template.spec")
        if kind != "StatefulSet":
            return estimate
        claims, notes = ZERO, []
        for index, raw in enumerate(_opt_list(spec, "volumeClaimTemplates", "spec")):
            cpath = f"spec.volumeClaimTemplates[{index}]"
            claim_monthly, note = _price_claim(_mapping(raw, cpath), prices, cpath)
            claims += claim_monthly
            notes.append(f"volume claim template {note}, x {replicas} replicas")
        return _Estimate(estimate.pod_monthly + claims, estimate.pod_hours, replicas, estimate.lines,
                         estimate.storage_monthly + claims * replicas, notes=(*estimate.notes, *notes),
                         defaulted=estimate.defaulted, unresourced=estimate.unresourced)
    if kind == "DaemonSet":
        nodes = Decimal(prices.daemonset_node_count)
        return _pods(_pod_template_spec(spec, "spec"), nodes, HOURS_PER_MONTH, prices, fill, "spec.template.spec",
                     [f"DaemonSet priced on {nodes} nodes (price book daemonset_node_count)"])
    if kind == "Job":
        hours, note = _runtime_hours([_annotations(obj, "object")], prices)
        return _pods(_pod_template_spec(spec, "spec"), _job_pods(spec, "spec"), hours, prices, fill,
                     "spec.template.spec", [f"one-off run: {note}"])
    if kind == "CronJob":
        return _cronjob(obj, spec, prices, fill)
    if kind == "PersistentVolumeClaim":
        claim_monthly, note = _price_claim(obj, prices, "object")
        return _Estimate(ZERO, HOURS_PER_MONTH, ONE, storage_monthly=claim_monthly,
                         flat_monthly=claim_monthly, notes=(note,))
    if kind == "Service":
        if _opt_str(spec, "type", "spec") != "LoadBalancer":
            return None
        return _Estimate(ZERO, HOURS_PER_MONTH, ONE, flat_monthly=prices.load_balancer_per_month,
                         notes=(f"LoadBalancer Service: flat {prices.load_balancer_per_month}/month",))
    if kind == "HorizontalPodAutoscaler":
        return _hpa(spec, target_pod_monthly)
    if kind == "Scale":
        return _scale(spec, target_pod_monthly)
    return None


def _cronjob(obj: Mapping[str, Any], spec: Mapping[str, Any], prices: ClusterPrices, fill: _Fill) -> _Estimate:
    schedule = _opt_str(spec, "schedule", "spec")
    if schedule is None:
        raise PricingError("spec.schedule is required")
    runs = runs_per_month(schedule)
    job_template = _opt_mapping(spec, "jobTemplate", "spec")
    job_spec = _opt_mapping(job_template, "spec", "spec.jobTemplate")
    annotation_sources = [_annotations(obj, "object"), _annotations(job_template, "spec.jobTemplate")]
    hours, note = _runtime_hours(annotation_sources, prices)
    pod_hours = runs * hours
    notes = [f"schedule {schedule!r}: {runs:.2f} runs/month; {note}"]
    # Forbid and Replace never let runs overlap, so the pods cannot run more than the whole month.
    if spec.get("concurrencyPolicy") in ("Forbid", "Replace") and pod_hours > HOURS_PER_MONTH:
        pod_hours = HOURS_PER_MONTH
        notes.append(f"concurrencyPolicy {spec['concurrencyPolicy']}: capped at {HOURS_PER_MONTH} h/month")
    path = "spec.jobTemplate.spec"
    return _pods(_pod_template_spec(job_spec, path), _job_pods(job_spec, path), pod_hours, prices, fill,
                 f"{path}.template.spec", notes)


def _scale_target(spec: Mapping[str, Any]) -> str:
    ref = _opt_mapping(spec, "scaleTargetRef", "spec")
    kind = _opt_str(ref, "kind", "spec.scaleTargetRef") or "?"
    return f"{kind}/{_opt_str(ref, 'name', 'spec.scaleTargetRef') or '?'}"


def _hpa(spec: Mapping[str, Any], target_pod_monthly: Decimal | None) -> _Estimate:
    if spec.get("maxReplicas") is None:
        raise PricingError("spec.maxReplicas is required")
    maximum = Decimal(_opt_int(spec, "maxReplicas", "spec", 1))
    minimum = Decimal(_opt_int(spec, "minReplicas", "spec", 1))
    target = _scale_target(spec)
    per_replica = _target_monthly(target_pod_monthly)
    if per_replica is None:
        return _Estimate(ZERO, HOURS_PER_MONTH, maximum, notes=(
            f"per-replica cost of scale target {target} not supplied; HPA priced at 0",))
    return _Estimate(per_replica, HOURS_PER_MONTH, maximum, floor_monthly=per_replica * minimum, notes=(
        f"worst case: maxReplicas {maximum} x {per_replica}/month per replica of {target}; "
        f"floor minReplicas {minimum}",))


def _scale(spec: Mapping[str, Any], target_pod_monthly: Decimal | None) -> _Estimate:
    replicas = Decimal(_opt_int(spec, "replicas", "spec", 0))
    per_replica = _target_monthly(target_pod_monthly)
    if per_replica is None:
        return _Estimate(ZERO, HOURS_PER_MONTH, replicas,
                         notes=("per-replica cost of the scaled workload not supplied; Scale priced at 0",))
    return _Estimate(per_replica, HOURS_PER_MONTH, replicas)


def _owned_by_controller(obj: Mapping[str, Any]) -> bool:
    metadata = _opt_mapping(obj, "metadata", "object")
    for index, raw in enumerate(_opt_list(metadata, "ownerReferences", "metadata")):
        if _mapping(raw, f"metadata.ownerReferences[{index}]").get("controller") is True:
            return True
    return False


def price_object(obj: Mapping[str, Any], book: PriceBook, *, cluster: str = "default",
                 target_pod_monthly: Decimal | None = None, defaults: ContainerDefaults | None = None,
                 namespace: str | None = None) -> ObjectCost:
    """Return the estimated monthly cost of one Kubernetes object; raise PricingError if it is malformed.

    `target_pod_monthly` is the monthly cost of one replica of the workload an HPA or Scale object scales
    (e.g. `price_object(deployment, book).pod_monthly_usd`); without it those are priced at 0.

    A container that names neither a request nor a limit for cpu or memory gets the request its namespace's
    LimitRange gives it (when mirrored into the book's `limit_ranges`), else `defaults`; without either it is
    priced at 0 for that resource and counted in `unresourced_containers`. `namespace` defaults to the
    object's `metadata.namespace`, then `default`.
    """
    obj = _mapping(obj, "object")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise PricingError("object.kind must be a non-empty string")
    owned = _owned_by_controller(obj)
    prices = book.for_cluster(cluster)
    notes: list[str] = []
    if cluster != "default" and cluster not in book.clusters:
        notes.append(f"cluster {cluster!r} has no price overrides; default prices used")
    if owned:
        notes.append("created by a controller (ownerReferences controller=true); its owner carries the cost")
    if namespace is None:
        namespace = _opt_str(_opt_mapping(obj, "metadata", "object"), "namespace", "metadata") or "default"
    fill = _Fill(prices.limit_ranges.get(namespace, MappingProxyType({})), defaults)
    estimate = _estimate(kind, obj, prices, fill, target_pod_monthly)
    if estimate is None:
        return ObjectCost(monthly(ZERO), hourly(ZERO), False, kind, (), ZERO, None, owned,
                          (*notes, f"{kind} has no direct cost"))
    total = estimate.pod_monthly * estimate.replicas + estimate.flat_monthly
    if total > MAX_AMOUNT:
        raise PricingError(f"estimated cost of {kind} exceeds {MAX_AMOUNT} USD per month; "
                           "check replicas and requests")
    lines = tuple(
        ContainerCost(line.name, line.role, line.req.cpu, line.req.memory / GIB, line.req.gpu,
                      estimate.replicas, hourly(line.hourly),
                      monthly(line.hourly * estimate.pod_hours * estimate.replicas))
        for line in estimate.lines
    )
    floor = None if estimate.floor_monthly is None else monthly(estimate.floor_monthly)
    return ObjectCost(monthly(total), hourly(total / HOURS_PER_MONTH), True, kind, lines, estimate.replicas,
                      floor, owned, (*notes, *estimate.notes), monthly(estimate.pod_monthly),
                      monthly(estimate.storage_monthly), estimate.defaulted, estimate.unresourced)


# --------------------------------------------------------------------------------------------------
# Admission deltas


def _override(obj: Mapping[str, Any]) -> tuple[Decimal, Decimal] | None:
    annotations = _annotations(_mapping(obj, "object"), "object")
    per_month = _annotation_amount(annotations, ANNOTATION_MONTHLY)
    per_hour = _annotation_amount(annotations, ANNOTATION_HOURLY)
    if per_month is None and per_hour is None:
        return None
    if per_month is None:
        assert per_hour is not None
        per_month = per_hour * HOURS_PER_MONTH
        if per_month > MAX_AMOUNT:
            raise PricingError(f"annotation {ANNOTATION_HOURLY} x {HOURS_PER_MONTH} exceeds {MAX_AMOUNT} USD")
    if per_hour is None:
        per_hour = per_month / HOURS_PER_MONTH
    return monthly(per_month), hourly(per_hour)


def _override_values(obj: Mapping[str, Any]) -> tuple[object, object]:
    annotations = _annotations(_mapping(obj, "object"), "object")
    return annotations.get(ANNOTATION_MONTHLY), annotations.get(ANNOTATION_HOURLY)


def price_change(operation: str, new: Mapping[str, Any] | None, old: Mapping[str, Any] | None,
                 book: PriceBook, *, cluster: str = "default", target_pod_monthly: Decimal | None = None,
                 defaults: ContainerDefaults | None = None, namespace: str | None = None) -> CostDelta:
    """Return the monthly/hourly cost delta of a CREATE, UPDATE or DELETE request; raise PricingError.

    Override annotations on the new object replace the estimate on CREATE, and on UPDATE only when their
    values changed (annotations persist, so an unchanged one was already counted). DELETE always credits
    the estimated cost of the old object.
    """
    op = operation.upper() if isinstance(operation, str) else None
    if op == "CONNECT":
        return CostDelta(monthly(ZERO), hourly(ZERO), None, None, False, False, ("CONNECT has no cost",))
    if op not in ("CREATE", "UPDATE", "DELETE"):
        raise PricingError(f"unsupported admission operation {operation!r}")
    if op in ("CREATE", "UPDATE") and new is None:
        raise PricingError(f"{op} request has no object")
    if op == "UPDATE" and old is None:
        raise PricingError("UPDATE request has no oldObject")
    if op == "DELETE" and old is None:
        return CostDelta(monthly(ZERO), hourly(ZERO), None, None, False, False,
                         ("DELETE without oldObject: nothing to credit",))
    after = price_object(new, book, cluster=cluster, target_pod_monthly=target_pod_monthly, defaults=defaults,
                         namespace=namespace) if op != "DELETE" and new is not None else None
    before = price_object(old, book, cluster=cluster, target_pod_monthly=target_pod_monthly, defaults=defaults,
                          namespace=namespace) if op != "CREATE" and old is not None else None
    delta_month = (after.monthly_usd if after else ZERO) - (before.monthly_usd if before else ZERO)
    delta_hour = (after.hourly_usd if after else ZERO) - (before.hourly_usd if before else ZERO)
    cost_impact = any(cost.cost_impact for cost in (before, after) if cost is not None)
    notes: list[str] = []
    if any(cost.owned_by_controller for cost in (before, after) if cost is not None):
        notes.append("owned by a controller: skip it, its owner's cost already covers these pods")
    overridden = False
    if op != "DELETE" and new is not None:
        override = _override(new)
        if override is not None and op == "UPDATE" and old is not None \
                and _override_values(new) == _override_values(old):
            notes.append("cost override annotations unchanged since the previous version; estimate used")
        elif override is not None:
            delta_month, delta_hour = override
            overridden, cost_impact = True, True
            notes.append(f"estimate overridden by {ANNOTATION_MONTHLY}/{ANNOTATION_HOURLY}")
    return CostDelta(monthly(delta_month), hourly(delta_hour), before, after, overridden, cost_impact,
                     tuple(notes))
