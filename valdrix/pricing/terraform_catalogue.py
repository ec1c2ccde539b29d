"""Price catalogue for Terraform resources: YAML data files validated by pydantic (unknown keys rejected)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

Price = Annotated[Decimal, Field(ge=0)]
# Region key meaning "same price in every region".
ANY_REGION = "*"

T = TypeVar("T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedPrice(_Strict):
    """A per-resource price that does not depend on attributes: either hourly or monthly, by region."""

    hourly: dict[str, Price] = Field(default_factory=dict)
    monthly: dict[str, Price] = Field(default_factory=dict)
    note: str | None = None

    @model_validator(mode="after")
    def _one_unit(self) -> FixedPrice:
        if bool(self.hourly) == bool(self.monthly):
            raise ValueError("exactly one of hourly / monthly must be given")
        return self


class StoragePrice(_Strict):
    """Per GB-month storage price plus optional provisioned IOPS / throughput above a free allowance."""

    gb_month: Price
    iops_month: Price = Decimal(0)
    free_iops: int = Field(default=0, ge=0)
    throughput_month: Price = Decimal(0)
    free_throughput: int = Field(default=0, ge=0)


class DiskTier(_Strict):
    """A fixed-size disk tier: any disk up to `max_gb` costs `monthly` per month."""

    max_gb: int = Field(gt=0)
    monthly: Price


class VmPrice(_Strict):
    """Hourly VM price by operating system (Windows includes the licence)."""

    linux: Price
    windows: Price | None = None


class SqlCustom(_Strict):
    """Cloud SQL custom-tier rates per vCPU-hour and per GB-of-RAM-hour."""

    vcpu_hour: Price
    gb_ram_hour: Price


class DynamoDbPrice(_Strict):
    """DynamoDB provisioned capacity rates per capacity-unit-hour."""

    rcu_hour: Price
    wcu_hour: Price


class _ProviderCatalogue(_Strict):
    default_region: str
    free: tuple[str, ...]
    usage_based: dict[str, str]
    fixed: dict[str, FixedPrice]

    def is_free(self, resource_type: str) -> bool:
        """Return True if `resource_type` matches the free list (a trailing `*` matches a prefix)."""
        return any(
            resource_type == p or (p.endswith("*") and resource_type.startswith(p[:-1])) for p in self.free
        )


class AwsCatalogue(_ProviderCatalogue):
    ec2: dict[str, dict[str, Price]]
    ebs: dict[str, dict[str, StoragePrice]]
    rds: dict[str, dict[str, dict[str, Price]]]
    rds_storage: dict[str, dict[str, StoragePrice]]
    elasticache: dict[str, dict[str, Price]]
    dynamodb: dict[str, DynamoDbPrice]


class GoogleCatalogue(_ProviderCatalogue):
    compute: dict[str, dict[str, Price]]
    disk: dict[str, dict[str, StoragePrice]]
    sql_tiers: dict[str, dict[str, Price]]
    sql_custom: dict[str, SqlCustom]
    sql_storage: dict[str, dict[str, StoragePrice]]


class AzureCatalogue(_ProviderCatalogue):
    vm: dict[str, dict[str, VmPrice]]
    managed_disk: dict[str, dict[str, tuple[DiskTier, ...]]]
    firewall: dict[str, dict[str, Price]]
    public_ip: dict[str, dict[str, Price]]


class Catalogue(_Strict):
    """All provider catalogues together."""

    aws: AwsCatalogue
    google: GoogleCatalogue
    azurerm: AzureCatalogue

    def provider_for(self, resource_type: str) -> _ProviderCatalogue | None:
        """Return the catalogue whose provider prefix matches `resource_type`, or None."""
        prefix = resource_type.split("_", 1)[0]
        catalogues: dict[str, _ProviderCatalogue] = {
            "aws": self.aws,
            "google": self.google,
            "azurerm": self.azurerm,
        }
        return catalogues.get(prefix)


def regional(table: Mapping[str, T], region: str) -> T | None:
    """Return the entry for `region` (or the any-region entry), or None if the region is not covered."""
    if region in table:
        return table[region]
    return table.get(ANY_REGION)


def _load(name: str) -> Any:
    text = resources.files("valdrix.pricing").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """Return the packaged price catalogue; raise pydantic ValidationError if a data file is malformed."""
    return Catalogue.model_validate(
        {
            "aws": _load("terraform_aws.yaml"),
            "google": _load("terraform_gcp.yaml"),
            "azurerm": _load("terraform_azure.yaml"),
        }
    )
