"""Terraform plan pricing over the third-party plan fixtures, with hand-computed expectations."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.pricing.fixtures import FIXTURES, load_json
from valdrix.pricing.infracost import read_infracost
from valdrix.pricing.terraform import PlanEstimate, PricingError, ResourceCost, load_catalogue, price_plan

PLANS = sorted((FIXTURES / "terraform-plans").glob("*.json"))


def _estimate(name: str) -> PlanEstimate:
    return price_plan(load_json(FIXTURES / "terraform-plans" / name))


def _resource(estimate: PlanEstimate, address: str) -> ResourceCost:
    return next(r for r in estimate.resources if r.address == address)


def test_fixtures_present() -> None:
    assert len(PLANS) >= 20


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.name)
def test_every_plan_prices_consistently(path: Path) -> None:
    estimate = price_plan(load_json(path))
    assert estimate.source == "terraform_plan"
    assert estimate.monthly_delta_usd == sum((r.monthly_delta_usd for r in estimate.resources), Decimal(0))
    assert estimate.hourly_delta_usd == sum((r.hourly_delta_usd for r in estimate.resources), Decimal(0))
    for r in estimate.resources:
        assert r.kind in {"priced", "free", "usage_based", "unpriced"}
        assert r.priced == (r.kind != "unpriced")
        if r.kind == "unpriced":
            assert r.notes, f"{r.address} unpriced without a reason"
            assert r.monthly_delta_usd == 0
            assert r in estimate.unpriced
        if r.kind in {"free", "usage_based"}:
            assert r.monthly_delta_usd == 0 and r.notes
        assert r.monthly_delta_usd.as_tuple().exponent == -4
        assert r.hourly_delta_usd.as_tuple().exponent == -6
    assert set(estimate.unpriced) == {r for r in estimate.resources if not r.priced}
    json.dumps(estimate.breakdown())  # JSON-ready: Decimals rendered as strings


def test_only_truly_unknown_resources_are_unpriced() -> None:
    unpriced = {
        (path.name, r.address): r.notes[0] for path in PLANS for r in price_plan(load_json(path)).unpriced
    }
    assert unpriced == {
        ("checkov__plan_tags_55_resources.json", "aws_elasticsearch_domain.monitoring-framework"): (
            "resource type aws_elasticsearch_domain is not in the price catalogue"
        ),
        ("checkov__plan_tags_55_resources.json", "aws_neptune_cluster_instance.default[0]"): (
            "resource type aws_neptune_cluster_instance is not in the price catalogue"
        ),
        ("terracost__aws_autoscaling_groups_plan_fv1.2.json", "module.magento.aws_autoscaling_group.mixed"): (
            "mixed_instances_policy: instance mix depends on weights and allocation strategy"
        ),
    }


# (plan, address, action, before, after, delta) with the arithmetic spelled out.
EXPECTED = [
    # UPDATE t3.micro -> t3.small, us-east-1b, 10 GB gp2 root ($0.10/GB): 0.0104*730 + 1.00 = 8.592;
    # 0.0208*730 + 1.00 = 16.184; delta 7.592
    (
        "infracost__plan_with_target_update_t3micro_to_t3small.json",
        "aws_instance.web_app_1",
        "update",
        "8.5920",
        "16.1840",
        "7.5920",
    ),
    # UPDATE t2.micro -> t2.xlarge, us-east-1e, 8 GB gp2: 0.0116*730 + 0.80 = 9.268;
    # 0.1856*730 + 0.80 = 136.288
    (
        "terracost__aws_update_t2micro_to_t2xlarge_plus_lb.json",
        "module.instance.aws_instance.example",
        "update",
        "9.2680",
        "136.2880",
        "127.0200",
    ),
    # CREATE t3.micro us-east-1, 15 GB root gp2: 0.0104*730 = 7.592 + 15*0.10 = 1.50 -> 9.092
    (
        "infracost__small_terraform_plan_nat_ebs.json",
        "aws_instance.web_app",
        "create",
        None,
        "9.0920",
        "9.0920",
    ),
    # CREATE io1 15 GB, 100 IOPS: 15*0.125 = 1.875 + 100*0.065 = 6.50 -> 8.375
    (
        "infracost__small_terraform_plan_nat_ebs.json",
        "aws_ebs_volume.storage_option_1",
        "create",
        None,
        "8.3750",
        "8.3750",
    ),
    # CREATE NAT gateway in module, eu-west-1: 0.048*730 = 35.04
    (
        "terraform-compliance__vpc_module_3_nat_gateways.json",
        "module.vpc.aws_nat_gateway.this[2]",
        "create",
        None,
        "35.0400",
        "35.0400",
    ),
    # DELETE t2.micro, no region in plan -> us-east-1, root unknown -> 8 GB gp2: 0.0116*730 + 0.80 = 9.268
    (
        "strata__SYNTHETIC_delete_instance_and_resize.json",
        "aws_instance.delete_me",
        "delete",
        "9.2680",
        None,
        "-9.2680",
    ),
    # REPLACE ["delete","create"] postgres db.t3.micro 20 GB gp2 us-west-2a: 0.018*730 + 20*0.115 = 15.44;
    # -> db.t3.small Multi-AZ 100 GB gp3 (stays in us-west-2): 2*0.036*730 = 52.56 + 2*100*0.115 = 23 -> 75.56
    (
        "strata__SYNTHETIC_replace_db_instance_resize.json",
        "aws_db_instance.main",
        "replace",
        "15.4400",
        "75.5600",
        "60.1200",
    ),
    # REPLACE ["create","delete"] Secrets Manager secret at $0.40/month; the upstream fixture carries
    # "before": null, so only the new secret is priced: delta +0.40
    (
        "checkov__replace_create_before_destroy_fv1.1.json",
        "aws_secretsmanager_secret.default",
        "replace",
        None,
        "0.4000",
        "0.4000",
    ),
    # CREATE RDS MySQL db.t3.small Multi-AZ eu-west-1, 10 GB gp2: 2*0.036*730 = 52.56 + 2*10*0.127 = 2.54
    (
        "terracost__aws_modules_ec2_elb_ebs_rds_plan.json",
        "module.rds.aws_db_instance.db",
        "create",
        None,
        "55.1000",
        "55.1000",
    ),
    # CREATE t2.micro on the aws.paris provider alias (eu-west-3), 8 GB gp2:
    # 0.0132*730 = 9.636 + 8*0.116 = 0.928
    (
        "terracost__aws_modules_ec2_elb_ebs_rds_plan.json",
        "aws_instance.example",
        "create",
        None,
        "10.5640",
        "10.5640",
    ),
    # CREATE EKS node group 1 x t3.large eu-west-1: 0.0912*730 = 66.576
    (
        "terracost__aws_eks_node_group_plan_fv1.2.json",
        "module.eks.aws_eks_node_group.example",
        "create",
        None,
        "66.5760",
        "66.5760",
    ),
    # CREATE ASG desired 3 via launch configuration m4.large eu-west-1: 3*0.111*730 = 243.09
    (
        "terracost__aws_autoscaling_groups_plan_fv1.2.json",
        "module.magento.aws_autoscaling_group.lc",
        "create",
        None,
        "243.0900",
        "243.0900",
    ),
    # CREATE n1-standard-1 us-central1-a + 42 GB pd-standard: 0.0475*730 = 34.675 + 42*0.04 = 1.68 -> 36.355
    (
        "tgc__full_compute_instance.tfplan.json",
        "google_compute_instance.full_list_default_1",
        "create",
        None,
        "36.3550",
        "36.3550",
    ),
    # CREATE Cloud SQL db-f1-micro ZONAL, disk unknown -> 10 GB PD_SSD: 0.0105*730 = 7.665 + 10*0.17 = 1.70
    (
        "tgc__sql_database_instance.tfplan.json",
        "google_sql_database_instance.my-test-sql",
        "create",
        None,
        "9.3650",
        "9.3650",
    ),
    # CREATE Standard_DS1_v2 Linux francecentral: 0.0858*730 = 62.634 (OS disk not priced, noted)
    (
        "terracost__azurerm_virtual_machine_plan.json",
        "module.vm.azurerm_virtual_machine.main",
        "create",
        None,
        "62.6340",
        "62.6340",
    ),
    # CREATE Azure Firewall, sku_tier not configured -> Standard: 1.25*730 = 912.5
    (
        "infracost__azure_firewall_plan.json",
        "azurerm_firewall.non_usage",
        "create",
        None,
        "912.5000",
        "912.5000",
    ),
    # UPDATE in nested modules with no price-relevant change: 0.017*730 + 5*0.115 = 12.985 both sides
    (
        "infracost__terraform_v0.14_plan_nested_modules.json",
        "module.db.module.db_1.module.db_instance.aws_db_instance.this[0]",
        "update",
        "12.9850",
        "12.9850",
        "0.0000",
    ),
]


@pytest.mark.parametrize(
    ("plan", "address", "action", "before", "after", "delta"), EXPECTED, ids=[e[1] for e in EXPECTED]
)
def test_hand_computed_resource_costs(
    plan: str, address: str, action: str, before: str | None, after: str | None, delta: str
) -> None:
    r = _resource(_estimate(plan), address)
    assert (r.action, r.kind) == (action, "priced")
    assert r.before_monthly_usd == (None if before is None else Decimal(before))
    assert r.after_monthly_usd == (None if after is None else Decimal(after))
    assert r.monthly_delta_usd == Decimal(delta)


def test_hourly_priced_resource_monthly_is_exactly_hourly_times_730() -> None:
    r = _resource(
        _estimate("terraform-compliance__vpc_module_3_nat_gateways.json"),
        "module.vpc.aws_nat_gateway.this[0]",
    )
    assert r.hourly_delta_usd == Decimal("0.048000")
    assert r.hourly_delta_usd * 730 == r.monthly_delta_usd


def test_plan_totals() -> None:
    # v0.14 nested modules: 6 new t3.nano (0.0052*730 + 8 GB gp2 = 4.596) + new db_2 12.985 = 40.561
    assert _estimate("infracost__terraform_v0.14_plan_nested_modules.json").monthly_delta_usd == Decimal(
        "40.5610"
    )
    # 3 NAT gateways (3*35.04) + 3 EIPs (3*0.005*730 = 10.95) in eu-west-1
    assert _estimate("terraform-compliance__vpc_module_3_nat_gateways.json").monthly_delta_usd == Decimal(
        "116.0700"
    )


def test_free_and_replace_of_free_resource() -> None:
    r = _resource(_estimate("terraform-json__replace_because_tainted_fv1.2.json"), "null_resource.example")
    assert (r.action, r.kind, r.monthly_delta_usd) == ("replace", "free", Decimal("0.0000"))


def test_noop_and_read_are_ignored() -> None:
    addresses = {
        r.address for r in _estimate("infracost__terraform_v0.14_plan_nested_modules.json").resources
    }
    assert "aws_instance.instance_1" not in addresses  # no-op
    assert "module.instances.aws_instance.module_instance_2" in addresses


def _single_change(after: dict[str, Any], after_unknown: dict[str, Any], rtype: str = "aws_instance") -> Any:
    return {
        "format_version": "1.2",
        "resource_changes": [
            {
                "address": f"{rtype}.x",
                "mode": "managed",
                "type": rtype,
                "name": "x",
                "provider_name": "registry.terraform.io/hashicorp/aws",
                "change": {
                    "actions": ["create"],
                    "before": None,
                    "after": after,
                    "after_unknown": after_unknown,
                },
            }
        ],
    }


def test_unknown_instance_type_is_unpriced_not_zero() -> None:
    estimate = price_plan(_single_change({"ami": "ami-1"}, {"instance_type": True}))
    [r] = estimate.unpriced
    assert r.notes == ("instance_type is known only after apply",)
    assert estimate.monthly_delta_usd == 0


def test_unknown_resource_type_is_unpriced() -> None:
    estimate = price_plan(_single_change({}, {}, rtype="aws_brand_new_service"))
    assert [r.notes for r in estimate.unpriced] == [
        ("resource type aws_brand_new_service is not in the price catalogue",)
    ]
    assert estimate.breakdown()["counts"]["unpriced"] == 1


def test_region_default_is_documented_in_notes() -> None:
    r = price_plan(_single_change({"instance_type": "t3.micro"}, {})).resources[0]
    # 0.0104*730 = 7.592 + 8 GB gp2 default root = 0.80
    assert r.after_monthly_usd == Decimal("8.3920")
    assert "region not set in plan, assumed us-east-1" in r.notes


def test_region_without_prices_is_unpriced() -> None:
    r = price_plan(
        _single_change({"instance_type": "t3.micro", "availability_zone": "ap-south-2a"}, {})
    ).unpriced[0]
    assert r.notes == ("no EC2 prices for region ap-south-2",)


def test_catalogue_loads_and_is_strict() -> None:
    catalogue = load_catalogue()
    assert catalogue.aws.ec2["us-east-1"]["t3.micro"] == Decimal("0.0104")
    with pytest.raises(ValueError, match="extra"):
        type(catalogue.aws).model_validate({**catalogue.aws.model_dump(), "surprise": 1})


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        {"format_version": "2.0"},
        {"format_version": "1.2", "resource_changes": {}},
        {"format_version": "1.2", "resource_changes": [1]},
        {
            "format_version": "1.2",
            "resource_changes": [{"address": "a.b", "type": "a", "change": {"actions": ["x"]}}],
        },
        {"format_version": "1.2", "resource_changes": [{"type": "a", "change": {"actions": ["create"]}}]},
    ],
)
def test_malformed_plan_raises_pricing_error(bad: Any) -> None:
    with pytest.raises(PricingError):
        price_plan(bad)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ATTRS = st.dictionaries(
    st.sampled_from(
        [
            "instance_type",
            "availability_zone",
            "root_block_device",
            "ebs_block_device",
            "size",
            "type",
            "iops",
            "engine",
            "instance_class",
            "allocated_storage",
            "multi_az",
            "scaling_config",
            "settings",
            "boot_disk",
            "machine_type",
            "location",
            "vm_size",
            "sku_tier",
        ]
    ),
    JSON,
    max_size=6,
)
CHANGE = st.fixed_dictionaries(
    {
        "address": st.text(min_size=1, max_size=8),
        "type": st.sampled_from(
            [
                "aws_instance",
                "aws_ebs_volume",
                "aws_db_instance",
                "aws_eks_node_group",
                "aws_autoscaling_group",
                "google_compute_instance",
                "google_sql_database_instance",
                "azurerm_virtual_machine",
                "azurerm_firewall",
                "aws_iam_role",
                "x_unknown",
            ]
        ),
        "change": st.fixed_dictionaries(
            {
                "actions": st.sampled_from(
                    [["create"], ["delete"], ["update"], ["delete", "create"], ["no-op"]]
                ),
                "before": ATTRS | JSON,
                "after": ATTRS | JSON,
                "after_unknown": JSON,
            }
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {
                "format_version": st.just("1.2"),
                "resource_changes": st.lists(CHANGE | JSON, max_size=4),
                "configuration": JSON,
            }
        ),
    )
)
def test_junk_never_raises_anything_but_pricing_error(doc: Any) -> None:
    with contextlib.suppress(PricingError):
        price_plan(doc)
    with contextlib.suppress(PricingError):
        read_infracost(doc)
