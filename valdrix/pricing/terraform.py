"""Price a Terraform plan (`terraform show -json`, format 0.x/1.x) from the packaged catalogue, offline.

Region resolution, most specific first: the resource's own `availability_zone` / `zone` / `region` /
`location` attribute; else the constant `region` of the provider configuration the resource uses
(module-scoped keys such as `module.db:aws` fall back to the root `aws`); for an update whose new region is
unknown, the region of the `before` state; else the provider default (AWS us-east-1, GCP us-central1,
Azure eastus), which is stated in the resource's notes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from valdrix.errors import InvalidInput
from valdrix.money import HOURS_PER_MONTH, hourly, monthly, parse_amount
from valdrix.pricing.terraform_catalogue import (
    AwsCatalogue,
    AzureCatalogue,
    Catalogue,
    GoogleCatalogue,
    StoragePrice,
    load_catalogue,
    regional,
)

__all__ = ["Catalogue", "PlanEstimate", "PricingError", "ResourceCost", "load_catalogue", "price_plan"]


class PricingError(InvalidInput):
    """The document is not a readable Terraform plan or Infracost output."""

    code = "pricing_input_invalid"


@dataclass(frozen=True)
class ResourceCost:
    """Cost of one resource change; `kind` is priced | free | usage_based | unpriced."""

    address: str
    resource_type: str
    action: str
    before_monthly_usd: Decimal | None
    after_monthly_usd: Decimal | None
    monthly_delta_usd: Decimal
    hourly_delta_usd: Decimal
    priced: bool
    notes: tuple[str, ...]
    kind: str = "priced"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (Decimals as strings)."""
        return {
            "address": self.address,
            "resource_type": self.resource_type,
            "action": self.action,
            "kind": self.kind,
            "priced": self.priced,
            "before_monthly_usd": _str(self.before_monthly_usd),
            "after_monthly_usd": _str(self.after_monthly_usd),
            "monthly_delta_usd": str(self.monthly_delta_usd),
            "hourly_delta_usd": str(self.hourly_delta_usd),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class PlanEstimate:
    """Monthly/hourly cost delta of a plan; `unpriced` lists resources whose cost could not be determined."""

    monthly_delta_usd: Decimal
    hourly_delta_usd: Decimal
    resources: tuple[ResourceCost, ...]
    unpriced: tuple[ResourceCost, ...]
    source: str

    def breakdown(self) -> dict[str, Any]:
        """Return a JSON-ready summary (Decimals as strings) suitable as request metadata."""
        counts = {kind: 0 for kind in ("priced", "free", "usage_based", "unpriced")}
        for r in self.resources:
            counts[r.kind] = counts.get(r.kind, 0) + 1
        return {
            "source": self.source,
            "currency": "USD",
            "monthly_delta_usd": str(self.monthly_delta_usd),
            "hourly_delta_usd": str(self.hourly_delta_usd),
            "counts": counts,
            "resources": [r.as_dict() for r in self.resources],
            "unpriced": [
                {"address": r.address, "resource_type": r.resource_type, "reasons": list(r.notes)}
                for r in self.unpriced
            ],
        }


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class _Unpriced(Exception):
    """Raised inside a pricer when a state cannot be priced; the message is the user-facing reason."""


@dataclass
class _Cost:
    """Exact (unquantised) monthly cost of one resource state plus the notes explaining it."""

    monthly: Decimal
    notes: list[str]

    def add_hourly(self, rate: Decimal, quantity: Decimal = Decimal(1)) -> None:
        self.monthly += rate * quantity * HOURS_PER_MONTH

    def add_monthly(self, rate: Decimal, quantity: Decimal = Decimal(1)) -> None:
        self.monthly += rate * quantity


class _Attrs:
    """Attribute values of one resource state, with the plan's `after_unknown` markers alongside."""

    def __init__(self, values: Any, unknown: Any) -> None:
        self.values: Mapping[str, Any] = values if isinstance(values, Mapping) else {}
        self.unknown: Mapping[str, Any] = unknown if isinstance(unknown, Mapping) else {}

    def is_unknown(self, key: str) -> bool:
        return self.unknown.get(key) is True

    def text(self, key: str) -> str | None:
        """Known string value of `key`; None if absent; _Unpriced if unknown until apply or not a string."""
        if self.is_unknown(key):
            raise _Unpriced(f"{key} is known only after apply")
        value = self.values.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _Unpriced(f"{key} has unexpected value {value!r}")
        return value

    def number(self, key: str) -> Decimal | None:
        """Known numeric value of `key` (>= 0); None if absent; _Unpriced if unknown or invalid."""
        if self.is_unknown(key):
            raise _Unpriced(f"{key} is known only after apply")
        value = self.values.get(key)
        if value is None:
            return None
        try:
            number = parse_amount(value)
        except ValueError as exc:
            raise _Unpriced(f"{key} has unexpected value {value!r}") from exc
        if number < 0:
            raise _Unpriced(f"{key} is negative")
        return number

    def flag(self, key: str) -> bool:
        if self.is_unknown(key):
            raise _Unpriced(f"{key} is known only after apply")
        return self.values.get(key) is True

    def blocks(self, key: str) -> list[_Attrs] | None:
        """Nested blocks under `key`; None when the whole block list is unknown until apply."""
        if self.is_unknown(key):
            return None
        raw = self.values.get(key)
        unknown = self.unknown.get(key)
        if not isinstance(raw, list):
            return []
        unknown_list = unknown if isinstance(unknown, list) else []
        return [
            _Attrs(item, unknown_list[i] if i < len(unknown_list) else None) for i, item in enumerate(raw)
        ]

    def first_block(self, key: str) -> _Attrs | None:
        found = self.blocks(key)
        return found[0] if found else None


@dataclass(frozen=True)
class _State:
    """What a pricer needs: attributes, resolved region and the whole plan for cross-references."""

    address: str
    module: str
    attrs: _Attrs
    region: str
    plan: _PlanIndex
    catalogue: Catalogue


_Pricer = Callable[[_State, _Cost], None]

_AZ = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d)[a-z]$")
_GCP_ZONE = re.compile(r"^([a-z]+-[a-z]+\d)-[a-z]$")
_INDEX = re.compile(r"\[[^\]]*\]")


def _price(table: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in table:
        raise _Unpriced(f"no price for {what} {key!r} in catalogue")
    return table[key]


def _region_table(table: Mapping[str, Any], region: str, what: str) -> Any:
    found = regional(table, region)
    if found is None:
        raise _Unpriced(f"no {what} prices for region {region}")
    return found


def _storage(
    cost: _Cost,
    price: StoragePrice,
    size: Decimal,
    iops: Decimal | None = None,
    throughput: Decimal | None = None,
) -> None:
    cost.add_monthly(price.gb_month, size)
    if price.iops_month and iops is not None:
        cost.add_monthly(price.iops_month, max(iops - price.free_iops, Decimal(0)))
    if price.throughput_month and throughput is not None:
        cost.add_monthly(price.throughput_month, max(throughput - price.free_throughput, Decimal(0)))


# ---- AWS ---------------------------------------------------------------------------------------------------


def _aws(state: _State) -> AwsCatalogue:
    return state.catalogue.aws


def _ebs_volume(
    state: _State,
    cost: _Cost,
    attrs: _Attrs,
    size_key: str,
    type_key: str,
    label: str,
    default_size: Decimal | None = None,
) -> None:
    size = attrs.number(size_key)
    if size is None:
        if default_size is None:
            raise _Unpriced(f"{label}: {size_key} not set")
        size = default_size
        cost.notes.append(f"{label}: size not set, assumed {default_size} GB")
    try:
        volume_type = attrs.text(type_key)
    except _Unpriced:
        volume_type = None
    if volume_type is None:
        volume_type = "gp2"
        cost.notes.append(f"{label}: volume type not known before apply, assumed gp2 (provider default)")
    prices = _region_table(_aws(state).ebs, state.region, "EBS")
    price = _price(prices, volume_type, "EBS volume type")
    iops = attrs.number("iops") if price.iops_month else None
    if price.iops_month and iops is None and volume_type in ("io1", "io2"):
        raise _Unpriced(f"{label}: iops required for {volume_type}")
    throughput = attrs.number("throughput") if price.throughput_month else None
    _storage(cost, price, size, iops, throughput)


def _aws_instance_hourly(state: _State, instance_type: str) -> Decimal:
    prices = _region_table(_aws(state).ec2, state.region, "EC2")
    rate: Decimal = _price(prices, instance_type, "EC2 instance type")
    return rate


def _aws_instance(state: _State, cost: _Cost) -> None:
    attrs = state.attrs
    instance_type = attrs.text("instance_type")
    if instance_type is None:
        raise _Unpriced("instance_type not set (launch template instance types are not resolved)")
    cost.add_hourly(_aws_instance_hourly(state, instance_type))
    if instance_type.startswith(("t2.", "t3.", "t3a.", "t4g.")):
        cost.notes.append("burstable CPU credit surcharges (unlimited mode) not priced")
    root = attrs.blocks("root_block_device")
    if not root:
        # AWS AMIs default to an 8 GB root volume; Infracost assumes the same.
        cost.notes.append("root volume not known before apply, assumed 8 GB gp2")
        _storage(
            cost,
            _price(_region_table(_aws(state).ebs, state.region, "EBS"), "gp2", "EBS volume type"),
            Decimal(8),
        )
    else:
        _ebs_volume(state, cost, root[0], "volume_size", "volume_type", "root volume", Decimal(8))
    for i, block in enumerate(attrs.blocks("ebs_block_device") or []):
        _ebs_volume(state, cost, block, "volume_size", "volume_type", f"ebs_block_device[{i}]")


def _aws_ebs_volume(state: _State, cost: _Cost) -> None:
    _ebs_volume(state, cost, state.attrs, "size", "type", "volume")


def _aws_db_instance(state: _State, cost: _Cost) -> None:
    attrs = state.attrs
    instance_class = attrs.text("instance_class")
    engine = attrs.text("engine")
    if instance_class is None or engine is None:
        raise _Unpriced("instance_class and engine are required")
    multi_az = attrs.flag("multi_az")
    factor = Decimal(2) if multi_az else Decimal(1)
    engines = _region_table(_aws(state).rds, state.region, "RDS")
    classes = _price(engines, engine, "RDS engine")
    cost.add_hourly(_price(classes, instance_class, "RDS instance class"), factor)
    size = attrs.number("allocated_storage")
    if size is None:
        raise _Unpriced("allocated_storage not set")
    storage_type = None if attrs.is_unknown("storage_type") else attrs.text("storage_type")
    if storage_type is None:
        storage_type = "gp2"
        cost.notes.append("storage_type not known before apply, assumed gp2 (provider default without iops)")
    price = _price(
        _region_table(_aws(state).rds_storage, state.region, "RDS storage"), storage_type, "RDS storage type"
    )
    iops = attrs.number("iops") if price.iops_month else None
    cost.add_monthly(price.gb_month, size * factor)
    if price.iops_month and iops is not None:
        cost.add_monthly(price.iops_month, iops * factor)
    if multi_az:
        cost.notes.append("Multi-AZ: instance and storage doubled")
    cost.notes.append("backup storage beyond the free allowance not priced")


def _aws_elasticache_cluster(state: _State, cost: _Cost) -> None:
    node_type = state.attrs.text("node_type")
    if node_type is None:
        raise _Unpriced("node_type not set (replication group members are priced on the group)")
    nodes = state.attrs.number("num_cache_nodes") or Decimal(1)
    prices = _region_table(_aws(state).elasticache, state.region, "ElastiCache")
    cost.add_hourly(_price(prices, node_type, "ElastiCache node type"), nodes)


def _aws_eks_node_group(state: _State, cost: _Cost) -> None:
    scaling = state.attrs.first_block("scaling_config")
    if scaling is None:
        raise _Unpriced("scaling_config not known before apply")
    desired = scaling.number("desired_size")
    if desired is None:
        raise _Unpriced("scaling_config.desired_size not set")
    if state.attrs.is_unknown("instance_types"):
        raise _Unpriced("instance_types is known only after apply")
    types = state.attrs.values.get("instance_types")
    if isinstance(types, list) and types and isinstance(types[0], str):
        instance_type = types[0]
    else:
        instance_type = "t3.medium"  # EKS default when instance_types is unset
        cost.notes.append("instance_types not set, assumed t3.medium (EKS default)")
    cost.add_hourly(_aws_instance_hourly(state, instance_type), desired)
    cost.notes.append(f"{desired} x {instance_type} (desired_size); node volumes not priced")


def _aws_autoscaling_group(state: _State, cost: _Cost) -> None:
    attrs = state.attrs
    desired = attrs.number("desired_capacity")
    if desired is None:
        desired = attrs.number("min_size")
        if desired is None:
            raise _Unpriced("desired_capacity and min_size not set")
        cost.notes.append("desired_capacity not set, min_size used")
    if attrs.blocks("mixed_instances_policy"):
        raise _Unpriced("mixed_instances_policy: instance mix depends on weights and allocation strategy")
    instance_type = state.plan.launch_instance_type(state.module, state.address)
    if instance_type is None:
        raise _Unpriced("instance type of the launch configuration/template not resolvable from the plan")
    cost.add_hourly(_aws_instance_hourly(state, instance_type), desired)
    cost.notes.append(f"{desired} x {instance_type} (desired capacity); instance volumes not priced")


def _aws_dynamodb_table(state: _State, cost: _Cost) -> None:
    mode = state.attrs.text("billing_mode") or "PROVISIONED"
    if mode != "PROVISIONED":
        raise _Usage("on-demand requests depend on usage")
    rates = _region_table(_aws(state).dynamodb, state.region, "DynamoDB")
    cost.add_hourly(rates.rcu_hour, state.attrs.number("read_capacity") or Decimal(0))
    cost.add_hourly(rates.wcu_hour, state.attrs.number("write_capacity") or Decimal(0))
    cost.notes.append("provisioned capacity only; storage and autoscaling changes not priced")


# ---- Google ------------------------------------------------------------------------------------------------


def _google(state: _State) -> GoogleCatalogue:
    return state.catalogue.google


def _google_compute_instance(state: _State, cost: _Cost) -> None:
    machine_type = state.attrs.text("machine_type")
    if machine_type is None:
        raise _Unpriced("machine_type not set")
    machine_type = machine_type.rsplit("/", 1)[-1]
    cost.add_hourly(
        _price(
            _region_table(_google(state).compute, state.region, "Compute Engine"),
            machine_type,
            "machine type",
        )
    )
    boot = state.attrs.first_block("boot_disk")
    params = boot.first_block("initialize_params") if boot is not None else None
    size = disk_type = None
    if params is not None:
        size = params.number("size") if not params.is_unknown("size") else None
        disk_type = params.text("type") if not params.is_unknown("type") else None
    if size is None:
        size = Decimal(10)  # size of the public Debian/Ubuntu images
        cost.notes.append("boot disk size not known before apply, assumed 10 GB")
    if disk_type is None:
        disk_type = "pd-standard"  # provider default for initialize_params.type
        cost.notes.append("boot disk type not known before apply, assumed pd-standard")
    disks = _region_table(_google(state).disk, state.region, "persistent disk")
    _storage(cost, _price(disks, disk_type, "disk type"), size)


def _google_sql_database_instance(state: _State, cost: _Cost) -> None:
    settings = state.attrs.first_block("settings")
    if settings is None:
        raise _Unpriced("settings not known before apply")
    tier = settings.text("tier")
    if tier is None:
        raise _Unpriced("settings.tier not set")
    regional_ha = settings.text("availability_type") == "REGIONAL"
    factor = Decimal(2) if regional_ha else Decimal(1)
    custom = re.fullmatch(r"db-custom-(\d+)-(\d+)", tier)
    if custom:
        rates = _region_table(_google(state).sql_custom, state.region, "Cloud SQL custom")
        vcpus, memory_mb = Decimal(custom.group(1)), Decimal(custom.group(2))
        cost.add_hourly(rates.vcpu_hour * vcpus + rates.gb_ram_hour * memory_mb / Decimal(1024), factor)
    else:
        cost.add_hourly(
            _price(_region_table(_google(state).sql_tiers, state.region, "Cloud SQL"), tier, "tier"), factor
        )
    size = None if settings.is_unknown("disk_size") else settings.number("disk_size")
    if size is None:
        size = Decimal(10)  # Cloud SQL minimum / provider default
        cost.notes.append("disk_size not known before apply, assumed 10 GB")
    disk_type = settings.text("disk_type") or "PD_SSD"
    storage = _region_table(_google(state).sql_storage, state.region, "Cloud SQL storage")
    cost.add_monthly(_price(storage, disk_type, "Cloud SQL disk type").gb_month, size * factor)
    if regional_ha:
        cost.notes.append("REGIONAL availability: instance and storage doubled")
    cost.notes.append("backups and unused-IP charges not priced")


# ---- Azure -------------------------------------------------------------------------------------------------


def _azure(state: _State) -> AzureCatalogue:
    return state.catalogue.azurerm


def _azure_vm(size_key: str, windows: bool | None) -> _Pricer:
    def price(state: _State, cost: _Cost) -> None:
        size = state.attrs.text(size_key)
        if size is None:
            raise _Unpriced(f"{size_key} not set")
        vm = _price(_region_table(_azure(state).vm, state.region, "virtual machine"), size, "VM size")
        is_windows = windows if windows is not None else bool(state.attrs.blocks("os_profile_windows_config"))
        if is_windows:
            if vm.windows is None:
                raise _Unpriced(f"no Windows price for {size}")
            cost.add_hourly(vm.windows)
        else:
            cost.add_hourly(vm.linux)
        os_disk = state.attrs.first_block("os_disk") or state.attrs.first_block("storage_os_disk")
        if os_disk is None:
            cost.notes.append("OS disk not priced (not in plan)")
            return
        account = os_disk.text("storage_account_type") or os_disk.text("managed_disk_type")
        size_gb = os_disk.number("disk_size_gb")
        disks = regional(_azure(state).managed_disk, state.region)
        if account is None or size_gb is None or disks is None or account not in disks:
            cost.notes.append(f"OS disk not priced (type/size unknown or no disk prices for {state.region})")
            return
        cost.add_monthly(_disk_tier(disks[account], size_gb))

    return price


def _disk_tier(tiers: Sequence[Any], size_gb: Decimal) -> Decimal:
    for tier in tiers:
        if size_gb <= tier.max_gb:
            monthly_price: Decimal = tier.monthly
            return monthly_price
    raise _Unpriced(f"disk of {size_gb} GB is larger than the largest catalogued tier")


def _azure_managed_disk(state: _State, cost: _Cost) -> None:
    account = state.attrs.text("storage_account_type")
    size = state.attrs.number("disk_size_gb")
    if account is None or size is None:
        raise _Unpriced("storage_account_type and disk_size_gb are required")
    disks = _region_table(_azure(state).managed_disk, state.region, "managed disk")
    cost.add_monthly(_disk_tier(_price(disks, account, "storage account type"), size))
    if account == "Standard_LRS":
        cost.notes.append("Standard HDD transactions not priced")


def _azure_firewall(state: _State, cost: _Cost) -> None:
    if state.attrs.is_unknown("sku_tier") and not state.plan.configured(state.address, "sku_tier"):
        # Computed only because older azurerm providers default it; an unset sku_tier deploys Standard.
        tier = "Standard"
        cost.notes.append("sku_tier not configured, provider default Standard")
    else:
        tier = state.attrs.text("sku_tier") or "Standard"
    cost.add_hourly(
        _region_table(_price(_azure(state).firewall, tier, "firewall tier"), state.region, "firewall")
    )
    cost.notes.append("data processed ($/GB) not priced")


def _azure_public_ip(state: _State, cost: _Cost) -> None:
    sku = state.attrs.text("sku") or "Basic"
    key = sku if sku == "Standard" else f"{sku}_{state.attrs.text('allocation_method') or 'Dynamic'}"
    cost.add_hourly(
        _region_table(_price(_azure(state).public_ip, key, "public IP SKU"), state.region, "public IP")
    )


class _Usage(Exception):
    """Raised by a pricer when the state's cost is entirely usage-based."""


_PRICERS: dict[str, _Pricer] = {
    "aws_instance": _aws_instance,
    "aws_ebs_volume": _aws_ebs_volume,
    "aws_db_instance": _aws_db_instance,
    "aws_elasticache_cluster": _aws_elasticache_cluster,
    "aws_eks_node_group": _aws_eks_node_group,
    "aws_autoscaling_group": _aws_autoscaling_group,
    "aws_dynamodb_table": _aws_dynamodb_table,
    "google_compute_instance": _google_compute_instance,
    "google_sql_database_instance": _google_sql_database_instance,
    "azurerm_linux_virtual_machine": _azure_vm("size", windows=False),
    "azurerm_windows_virtual_machine": _azure_vm("size", windows=True),
    "azurerm_virtual_machine": _azure_vm("vm_size", windows=None),
    "azurerm_managed_disk": _azure_managed_disk,
    "azurerm_firewall": _azure_firewall,
    "azurerm_public_ip": _azure_public_ip,
}


# ---- plan reading ------------------------------------------------------------------------------------------


def _require_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PricingError(f"{what} must be an object")
    return value


def _require_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise PricingError(f"{what} must be a non-empty string")
    return value


_ACTIONS: dict[tuple[str, ...], str | None] = {
    ("create",): "create",
    ("update",): "update",
    ("delete",): "delete",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
    ("no-op",): None,
    ("read",): None,
    ("forget",): None,
}


@dataclass(frozen=True)
class _Change:
    address: str
    module: str
    resource_type: str
    provider: str
    action: str
    create_first: bool
    before: Any
    after: Any
    after_unknown: Any


class _PlanIndex:
    """Lookups across the whole plan: provider regions, configuration blocks and planned `after` values."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        configuration = plan.get("configuration")
        configuration = configuration if isinstance(configuration, Mapping) else {}
        providers = configuration.get("provider_config")
        self.providers: Mapping[str, Any] = providers if isinstance(providers, Mapping) else {}
        self.config_resources: dict[str, Mapping[str, Any]] = {}
        root = configuration.get("root_module")
        if isinstance(root, Mapping):
            self._walk(root, "")
        self.after: dict[str, Mapping[str, Any]] = {}

    def _walk(self, module: Mapping[str, Any], prefix: str) -> None:
        resources = module.get("resources")
        for resource in resources if isinstance(resources, list) else []:
            if isinstance(resource, Mapping) and isinstance(resource.get("address"), str):
                self.config_resources[prefix + resource["address"]] = resource
        calls = module.get("module_calls")
        for name, call in calls.items() if isinstance(calls, Mapping) else []:
            if isinstance(call, Mapping) and isinstance(call.get("module"), Mapping):
                self._walk(call["module"], f"{prefix}module.{name}.")

    def config_for(self, address: str) -> Mapping[str, Any] | None:
        return self.config_resources.get(_INDEX.sub("", address))

    def configured(self, address: str, key: str) -> bool:
        """True if the configuration block of `address` sets `key` (so an unknown value is not a default)."""
        config = self.config_for(address)
        expressions = config.get("expressions") if config is not None else None
        return not isinstance(expressions, Mapping) or key in expressions

    def provider_region(self, address: str, provider: str) -> str | None:
        """Constant `region` of the provider configuration used by `address`, if any."""
        config = self.config_for(address)
        key = config.get("provider_config_key") if config is not None else None
        candidates = [key, key.rsplit(":", 1)[-1]] if isinstance(key, str) else []
        candidates.append(provider.rsplit("/", 1)[-1])
        for candidate in candidates:
            entry = self.providers.get(candidate)
            if not isinstance(entry, Mapping):
                continue
            expressions = entry.get("expressions")
            region = expressions.get("region") if isinstance(expressions, Mapping) else None
            value = region.get("constant_value") if isinstance(region, Mapping) else None
            if isinstance(value, str) and value:
                return value
        return None

    def launch_instance_type(self, module: str, address: str) -> str | None:
        """Instance type of the launch configuration/template an autoscaling group uses, if resolvable."""
        config = self.config_for(address)
        expressions = config.get("expressions") if config is not None else None
        if not isinstance(expressions, Mapping):
            return None
        refs: list[Any] = []
        lc = expressions.get("launch_configuration")
        if isinstance(lc, Mapping):
            refs += lc.get("references") or []
        templates = expressions.get("launch_template")
        for template in templates if isinstance(templates, list) else []:
            for key in ("id", "name"):
                ref = template.get(key) if isinstance(template, Mapping) else None
                if isinstance(ref, Mapping):
                    refs += ref.get("references") or []
        prefix = f"{module}." if module else ""
        for ref in refs:
            if not isinstance(ref, str):
                continue
            parts = ref.split(".")
            target = prefix + ".".join(parts[:2])
            after = self.after.get(target) or self.after.get(f"{target}[0]")
            value = after.get("instance_type") if after is not None else None
            if isinstance(value, str) and value:
                return value
        return None


def _changes(plan: Mapping[str, Any], index: _PlanIndex) -> Iterator[_Change]:
    raw = plan.get("resource_changes", [])
    if not isinstance(raw, list):
        raise PricingError("resource_changes must be a list")
    parsed: list[tuple[Mapping[str, Any], Mapping[str, Any], str | None]] = []
    for i, item in enumerate(raw):
        rc = _require_mapping(item, f"resource_changes[{i}]")
        change = _require_mapping(rc.get("change"), f"resource_changes[{i}].change")
        actions = change.get("actions")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise PricingError(f"resource_changes[{i}].change.actions must be a list of strings")
        if tuple(actions) not in _ACTIONS:
            raise PricingError(f"resource_changes[{i}]: unsupported actions {actions!r}")
        address = _require_str(rc.get("address"), f"resource_changes[{i}].address")
        if isinstance(change.get("after"), Mapping):
            index.after[address] = change["after"]
        parsed.append((rc, change, _ACTIONS[tuple(actions)]))
    for i, (rc, change, action) in enumerate(parsed):
        if action is None or rc.get("mode", "managed") != "managed":
            continue
        module = rc.get("module_address", "")
        provider = rc.get("provider_name")
        yield _Change(
            address=rc["address"],
            module=module if isinstance(module, str) else "",
            resource_type=_require_str(rc.get("type"), f"resource_changes[{i}].type"),
            provider=provider if isinstance(provider, str) else "",
            action=action,
            create_first=change["actions"] == ["create", "delete"],
            before=change.get("before"),
            after=change.get("after"),
            after_unknown=change.get("after_unknown"),
        )


def _attribute_region(attrs: _Attrs, provider: str) -> str | None:
    for key in ("availability_zone", "zone", "region", "location"):
        value = attrs.values.get(key)
        if attrs.is_unknown(key) or not isinstance(value, str) or not value:
            continue
        if provider == "aws" and key == "availability_zone":
            match = _AZ.match(value)
            return match.group(1) if match else None
        if provider == "google" and key == "zone":
            match = _GCP_ZONE.match(value)
            return match.group(1) if match else None
        if provider == "azurerm":
            return value.replace(" ", "").lower()
        return value
    return None


def _price_state(
    change: _Change,
    values: Any,
    unknown: Any,
    index: _PlanIndex,
    catalogue: Catalogue,
    fallback_region: str | None,
) -> tuple[str, Decimal, list[str]]:
    """Return (kind, exact monthly cost, notes) for one side of a change."""
    provider = catalogue.provider_for(change.resource_type)
    # Utility providers (random, null, time...) have no catalogue of their own; the AWS free list covers them.
    free_in = provider or catalogue.aws
    if free_in.is_free(change.resource_type):
        return "free", Decimal(0), ["free: resource type has no charge"]
    pricer = _PRICERS.get(change.resource_type)
    fixed = provider.fixed.get(change.resource_type) if provider is not None else None
    usage = provider.usage_based.get(change.resource_type) if provider is not None else None
    if provider is None or (pricer is None and fixed is None and usage is None):
        return "unpriced", Decimal(0), [f"resource type {change.resource_type} is not in the price catalogue"]
    attrs = _Attrs(values, unknown)
    notes: list[str] = []
    region = _attribute_region(attrs, change.resource_type.split("_", 1)[0])
    region = region or index.provider_region(change.address, change.provider) or fallback_region
    if region is None:
        region = provider.default_region
        notes.append(f"region not set in plan, assumed {region}")
    cost = _Cost(Decimal(0), notes)
    try:
        if pricer is not None:
            pricer(_State(change.address, change.module, attrs, region, index, catalogue), cost)
        elif fixed is not None:
            if fixed.hourly:
                cost.add_hourly(_region_table(fixed.hourly, region, change.resource_type))
            else:
                cost.add_monthly(_region_table(fixed.monthly, region, change.resource_type))
            if fixed.note:
                notes.append(fixed.note)
        else:
            raise _Usage(usage)
    except _Usage as exc:
        return "usage_based", Decimal(0), [f"usage-based: {exc or usage}; not priced without usage data"]
    except _Unpriced as exc:
        return "unpriced", Decimal(0), [str(exc)]
    return "priced", cost.monthly, notes


def _price_change(change: _Change, index: _PlanIndex, catalogue: Catalogue) -> ResourceCost:
    sides: list[tuple[str, Decimal, list[str]] | None] = []
    # An update/replace whose new region is unknown until apply stays in the region it is in now.
    before_region = _attribute_region(_Attrs(change.before, None), change.resource_type.split("_", 1)[0])
    for label, values, unknown in (
        ("before", change.before, None),
        ("after", change.after, change.after_unknown),
    ):
        present = (
            isinstance(values, Mapping)
            and not (label == "before" and change.action == "create")
            and not (label == "after" and change.action == "delete")
        )
        if not present:
            sides.append(None)
            continue
        sides.append(_price_state(change, values, unknown, index, catalogue, before_region))
    before, after = sides
    if before is None and after is None:
        before = after = ("unpriced", Decimal(0), ["neither before nor after values are present"])
    kinds = {side[0] for side in (before, after) if side is not None}
    notes: list[str] = []
    for label, side in (("before", before), ("after", after)):
        if side is not None:
            prefix = (
                f"{label}: " if before is not None and after is not None and before[2] != after[2] else ""
            )
            notes += [prefix + note for note in side[2] if prefix + note not in notes]
    if change.create_first and "priced" in kinds:
        notes.append("create_before_destroy: old and new bill together briefly during the swap (not priced)")
    if "unpriced" in kinds:
        return ResourceCost(
            change.address,
            change.resource_type,
            change.action,
            None,
            None,
            monthly(0),
            hourly(0),
            False,
            tuple(notes),
            "unpriced",
        )
    kind = "priced" if "priced" in kinds else kinds.pop()
    before_exact = before[1] if before is not None else None
    after_exact = after[1] if after is not None else None
    delta = (after_exact or Decimal(0)) - (before_exact or Decimal(0))
    return ResourceCost(
        change.address,
        change.resource_type,
        change.action,
        None if before_exact is None else monthly(before_exact),
        None if after_exact is None else monthly(after_exact),
        monthly(delta),
        hourly(delta / HOURS_PER_MONTH),
        True,
        tuple(notes),
        kind,
    )


def price_plan(plan: Mapping[str, Any], catalogue: Catalogue | None = None) -> PlanEstimate:
    """Return the cost delta of a `terraform show -json` plan; raise PricingError if the plan is malformed."""
    plan = _require_mapping(plan, "plan")
    version = plan.get("format_version")
    if not isinstance(version, str) or not re.fullmatch(r"[01]\.\d+", version):
        raise PricingError(f"unsupported plan format_version {version!r} (expected 0.x or 1.x)")
    catalogue = catalogue or load_catalogue()
    index = _PlanIndex(plan)
    changes = list(_changes(plan, index))
    resources = tuple(_price_change(change, index, catalogue) for change in changes)
    return PlanEstimate(
        monthly_delta_usd=monthly(sum((r.monthly_delta_usd for r in resources), Decimal(0))),
        hourly_delta_usd=hourly(sum((r.hourly_delta_usd for r in resources), Decimal(0))),
        resources=resources,
        unpriced=tuple(r for r in resources if not r.priced),
        source="terraform_plan",
    )
