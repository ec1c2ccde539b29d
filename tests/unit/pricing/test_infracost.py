"""Infracost JSON reading over the upstream fixtures, and agreement of our plan pricer with Infracost."""

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
from valdrix.pricing.terraform import PricingError, price_plan

OUTPUTS = sorted((FIXTURES / "infracost").glob("*.json"))


def _read(name: str) -> Any:
    return read_infracost(load_json(FIXTURES / "infracost" / name))


@pytest.mark.parametrize("path", OUTPUTS, ids=lambda p: p.name)
def test_every_output_reads(path: Path) -> None:
    estimate = read_infracost(load_json(path))
    assert estimate.source == "infracost"
    for r in estimate.resources:
        assert r.priced == (r.kind != "unpriced")
        assert r.priced or r.notes
    json.dumps(estimate.breakdown())


@pytest.mark.parametrize(
    ("name", "monthly", "hourly"),
    [
        # breakdown without top-level diff keys: total 1361.3075 - missing past (0)
        ("infracost__example_out.json", "1361.3075", "1.864805"),
        ("infracost__policy_data_upload_plan_breakdown.json", "671.4340", "0.919773"),
        ("infracost__terraform_v0.14_breakdown.json", "40.5610", "0.055563"),
        ("infracost__terraform_v0.14_nochange_breakdown.json", "0.0000", "0.000000"),
        ("infracost__multi_project_cost_decrease.json", "-2241.6840", "-3.070800"),
        ("infracost__google_sql_and_disks_breakdown.json", "0.0000", "0.000000"),
        ("infracost__project_error.json", "1303.2800", "1.785315"),
        # no currency key: USD assumed (Infracost's default)
        ("infracost__azure_firewall_out.json", "4018.6500", "5.505000"),
        ("infracost__diff_compare_prior.json", "2045.9200", "2.802630"),
        ("infracost__diff_compare_current.json", "1303.2800", "1.785315"),
    ],
)
def test_totals(name: str, monthly: str, hourly: str) -> None:
    estimate = _read(name)
    assert (estimate.monthly_delta_usd, estimate.hourly_delta_usd) == (Decimal(monthly), Decimal(hourly))


def test_project_error_is_reported_not_zero() -> None:
    [error] = _read("infracost__project_error.json").unpriced
    assert error.action == "error" and not error.priced
    assert error.notes[0].startswith("project error 102: Error loading Terraform modules")


def test_per_resource_diff_and_null_costs() -> None:
    estimate = _read("infracost__multi_project_cost_decrease.json")
    web = next(r for r in estimate.resources if r.address == "my first project:aws_instance.web_app")
    # m5.8xlarge (1303.28) -> m5.4xlarge (742.64)
    assert (web.before_monthly_usd, web.after_monthly_usd, web.monthly_delta_usd) == (
        Decimal("1303.2800"),
        Decimal("742.6400"),
        Decimal("-560.6400"),
    )
    # The five lambdas are unchanged (no-op) with older-format components: a unit price, no quantity. They are
    # not part of the change, so the cost decrease is not "unpriced" and nothing escalates it.
    assert not [r for r in estimate.resources if r.resource_type == "aws_lambda_function"]
    assert not estimate.unpriced and estimate.monthly_delta_usd < 0


def _one_resource(resource: dict[str, object], *, currency: str = "USD") -> dict[str, object]:
    return {"version": "0.2", "currency": currency, "diffTotalMonthlyCost": "10", "projects": [
        {"name": "p", "breakdown": {"resources": [resource]}, "pastBreakdown": {"resources": []}}]}


def test_older_format_component_with_a_price_and_no_quantity_is_usage_based() -> None:
    component = {"name": "Requests", "price": "0.2", "monthlyQuantity": None, "hourlyQuantity": None}
    [created] = read_infracost(_one_resource({"name": "x_queue.q", "resourceType": "x_queue", "monthlyCost": None,
                                              "costComponents": [component]})).resources
    assert (created.action, created.kind) == ("create", "usage_based")


def test_usage_based_types_are_classified_like_the_built_in_pricer() -> None:
    # No components at all, yet the catalogue knows an S3 bucket's cost is usage-based, as price_plan says.
    [bucket] = read_infracost(_one_resource({"name": "aws_s3_bucket.b", "resourceType": "aws_s3_bucket",
                                             "monthlyCost": None, "costComponents": [
                                                 {"name": "Storage", "price": None}]})).resources
    assert bucket.kind == "usage_based"
    plan = {"format_version": "1.2", "resource_changes": [
        {"address": "aws_s3_bucket.b", "type": "aws_s3_bucket", "provider_name": "registry.terraform.io/hashicorp/aws",
         "change": {"actions": ["create"], "before": None, "after": {"bucket": "b"}, "after_unknown": {}}}]}
    [built_in] = price_plan(plan).resources
    assert built_in.kind == bucket.kind


def test_other_currencies_need_a_rate() -> None:
    resource = {"name": "aws_instance.a", "resourceType": "aws_instance", "monthlyCost": "10",
                "costComponents": [{"name": "Instance", "price": "1", "monthlyQuantity": "10"}]}
    with pytest.raises(PricingError, match=r"priced in 'EUR'.*--fx-rate EUR="):
        read_infracost(_one_resource(resource, currency="EUR"))
    estimate = read_infracost(_one_resource(resource, currency="EUR"), {"EUR": Decimal("1.1")})
    assert estimate.monthly_delta_usd == Decimal("11.0000")
    [converted] = estimate.resources
    assert converted.monthly_delta_usd == Decimal("11.0000") and "converted from EUR at 1.1" in converted.notes[-1]


def test_nochange_resources_are_noop() -> None:
    assert {r.action for r in _read("infracost__terraform_v0.14_nochange_breakdown.json").resources} == {
        "no-op"
    }


def test_fallback_total_minus_past_and_mixed_value_types() -> None:
    doc = {
        "version": "0.2",
        "totalMonthlyCost": 100,
        "pastTotalMonthlyCost": "40.5",
        "totalHourlyCost": None,
        "projects": [
            {
                "name": "p",
                "breakdown": {"resources": [{"name": "a.b", "monthlyCost": 100.0, "costComponents": [{}]}]},
                "pastBreakdown": {
                    "resources": [{"name": "a.b", "monthlyCost": "40.5", "costComponents": [{}]}]
                },
            }
        ],
    }
    estimate = read_infracost(doc)
    # 100 - 40.5 = 59.5 monthly; hourly derived 59.5 / 730 = 0.08150684...
    assert (estimate.monthly_delta_usd, estimate.hourly_delta_usd) == (
        Decimal("59.5000"),
        Decimal("0.081507"),
    )
    assert estimate.resources[0].monthly_delta_usd == Decimal("59.5000")


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        {"version": "0.3", "projects": []},
        {"version": "0.2", "projects": {}},
        {"version": "0.2", "projects": [], "diffTotalMonthlyCost": "abc"},
        {"version": "0.2", "projects": []},
        {"version": "0.2", "currency": "EUR", "projects": [], "diffTotalMonthlyCost": "1"},
        {
            "version": "0.2",
            "diffTotalMonthlyCost": "1",
            "projects": [{"breakdown": {"resources": [{"x": 1}]}}],
        },
        {"version": "0.2", "diffTotalMonthlyCost": "1", "projects": [{"breakdown": {"resources": [1]}}]},
        {"version": "0.2", "diffTotalMonthlyCost": [1], "projects": []},
        {"version": "0.2", "diffTotalMonthlyCost": "1e400", "projects": []},
    ],
)
def test_malformed_raises_pricing_error(bad: Any) -> None:
    with pytest.raises(PricingError):
        read_infracost(bad)


# Our plan pricer vs Infracost for the same resources (SOURCES.md pairs). Each difference > 10 % is explained.
PAIRS = [
    ("infracost__example_plan.json", "infracost__example_out.json"),
    ("infracost__policy_data_upload_plan_fv1.0.json", "infracost__policy_data_upload_plan_breakdown.json"),
    ("infracost__terraform_v0.14_plan_nested_modules.json", "infracost__terraform_v0.14_breakdown.json"),
    ("infracost__azure_firewall_plan.json", "infracost__azure_firewall_out.json"),
]
EXPLAINED = {
    # Infracost's usage file marks this instance reserved/all-upfront (compute $0); we price on-demand list.
    "aws_instance.zero_cost_instance": "usage file: reserved instance",
    # 100M requests and 25M GB-s come from Infracost's usage file; without usage data we classify usage-based.
    "aws_lambda_function.hello_world": "usage-based, no usage data",
    # Infracost prices 6 WCU (autoscaling usage estimate) where the plan provisions write_capacity 20:
    # ours 30 RCU * 0.0949 + 20 WCU * 0.4745 = 12.337 vs theirs 2.847 + 6 * 0.4745 = 5.694.
    "aws_dynamodb_table.autoscale_dynamodb_table": "autoscaled WCU from usage estimate",
    # The fixture predates Premium GA: 0.875/h was the 50 % preview price; GA list price is 1.75/h.
    "azurerm_firewall.premium": "Premium preview price",
    "azurerm_firewall.premium_virtual_hub": "Premium preview price",
}


def _infracost_costs(name: str) -> dict[str, Decimal | None]:
    doc = load_json(FIXTURES / "infracost" / name)
    return {
        r["name"]: None if r.get("monthlyCost") is None else Decimal(str(r["monthlyCost"]))
        for p in doc["projects"]
        for r in p["breakdown"]["resources"]
    }


@pytest.mark.parametrize(("plan", "output"), PAIRS, ids=[p[0] for p in PAIRS])
def test_agreement_with_infracost_within_ten_percent(plan: str, output: str) -> None:
    ours = {r.address: r for r in price_plan(load_json(FIXTURES / "terraform-plans" / plan)).resources}
    theirs = _infracost_costs(output)
    compared = 0
    for address, their_cost in theirs.items():
        if address not in ours or address in EXPLAINED or ours[address].kind != "priced":
            continue
        our_cost = ours[address].after_monthly_usd
        assert our_cost is not None and their_cost is not None
        assert abs(our_cost - their_cost) <= their_cost * Decimal("0.10"), (address, our_cost, their_cost)
        compared += 1
    assert compared >= 1
    for address in EXPLAINED:
        if address in ours and address in theirs:
            assert ours[address].after_monthly_usd != theirs[address]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
COST = st.none() | st.integers() | st.floats() | st.text(max_size=6) | st.just("12.5")
RESOURCE = st.fixed_dictionaries(
    {"name": st.text(max_size=6) | JSON, "monthlyCost": COST, "costComponents": JSON, "subresources": JSON}
)
PROJECT = st.fixed_dictionaries(
    {
        "name": JSON,
        "metadata": st.fixed_dictionaries({"errors": JSON}) | JSON,
        "breakdown": st.fixed_dictionaries({"resources": st.lists(RESOURCE | JSON, max_size=3)}) | JSON,
        "pastBreakdown": st.fixed_dictionaries({"resources": st.lists(RESOURCE, max_size=3)}) | JSON,
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {
                "version": st.just("0.2"),
                "projects": st.lists(PROJECT | JSON, max_size=3),
                "diffTotalMonthlyCost": COST,
                "totalMonthlyCost": COST,
                "pastTotalMonthlyCost": COST,
                "diffTotalHourlyCost": COST,
            }
        ),
    )
)
def test_junk_never_raises_anything_but_pricing_error(doc: Any) -> None:
    with contextlib.suppress(PricingError):
        read_infracost(doc)
