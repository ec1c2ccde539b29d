"""Read Infracost JSON output (`version` "0.2", breakdown or diff) into a PlanEstimate.

Totals come from `diffTotalMonthlyCost` / `diffTotalHourlyCost`. Breakdown outputs written without a diff lack
those keys; then the delta is `totalMonthlyCost - pastTotalMonthlyCost` (a missing past total counts as 0,
i.e. everything is new), and a missing hourly figure is derived as monthly / 730. Per resource, the delta is
the resource's cost in `breakdown` minus its cost in `pastBreakdown`, matched by name within a project.

A resource without a cost is classified as the built-in pricer would: usage-based when its type is usage-based
in the packaged catalogue, when a component says `usageBased`, or when (older output, before that flag
existed) a component carries a unit price but no quantity: its quantity would come from a usage file.
Unchanged resources (no-op) are not part of the change, so an unpriced one does not make the change unpriced.

Output in another currency is refused unless a rate converts it (`fx_rates`, USD per unit of that currency):
budgets are in USD, and a EUR figure read as dollars would be silently wrong by the exchange rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from valdrix.money import HOURS_PER_MONTH, hourly, monthly, parse_amount
from valdrix.pricing.terraform import PlanEstimate, PricingError, ResourceCost, load_catalogue

__all__ = ["PricingError", "read_infracost"]

SUPPORTED_VERSION = "0.2"


def _amount(raw: Any, where: str) -> Decimal | None:
    """Return a cost value (string, number or null) as Decimal, None for null; PricingError otherwise."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
        raise PricingError(f"{where} must be a number, numeric string or null")
    try:
        return parse_amount(raw)
    except ValueError as exc:
        raise PricingError(f"{where}: {exc}") from exc


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PricingError(f"{where} must be an object")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PricingError(f"{where} must be a list")
    return raw


def _resources(breakdown: Any, where: str) -> dict[str, tuple[str, Decimal | None, bool]]:
    """Map resource name -> (resource type, monthly cost or None, usage-based) for one breakdown section."""
    if breakdown is None:
        return {}
    section = _mapping(breakdown, where)
    found: dict[str, tuple[str, Decimal | None, bool]] = {}
    for i, item in enumerate(_list(section.get("resources"), f"{where}.resources")):
        resource = _mapping(item, f"{where}.resources[{i}]")
        name = resource.get("name")
        if not isinstance(name, str) or not name:
            raise PricingError(f"{where}.resources[{i}].name must be a non-empty string")
        rtype = resource.get("resourceType")
        cost = _amount(resource.get("monthlyCost"), f"{where}.resources[{i}].monthlyCost")
        components = _list(resource.get("costComponents"), f"{where}.resources[{i}].costComponents")
        rtype = rtype if isinstance(rtype, str) else name.split(".")[-2] if "." in name else name
        usage = _usage_type(rtype) or any(isinstance(c, Mapping) and _usage_component(c) for c in components)
        has_prices = bool(components) or bool(_list(resource.get("subresources"), f"{where}.resources[{i}]"))
        # A null cost with nothing to price is how Infracost lists resources it knows to be free.
        found[name] = (rtype, cost, usage or not has_prices)
    return found


def _usage_type(resource_type: str) -> bool:
    catalogue = load_catalogue()
    provider = catalogue.provider_for(resource_type)
    return provider is not None and resource_type in provider.usage_based


def _usage_component(component: Mapping[str, Any]) -> bool:
    if component.get("usageBased") is True:
        return True
    # Older output has no `usageBased`: a unit price with neither quantity is a usage-file quantity left unset.
    return (component.get("price") not in (None, "", "0") and component.get("monthlyQuantity") is None
            and component.get("hourlyQuantity") is None)


def _project_costs(project: Mapping[str, Any], where: str) -> list[ResourceCost]:
    name = project.get("name")
    label = name if isinstance(name, str) and name else where
    metadata = project.get("metadata")
    errors = (
        _list(metadata.get("errors"), f"{where}.metadata.errors") if isinstance(metadata, Mapping) else []
    )
    costs: list[ResourceCost] = []
    if errors:
        messages = tuple(
            f"project error {e.get('code')}: {e.get('message')}"
            if isinstance(e, Mapping)
            else f"project error: {e}"
            for e in errors
        )
        costs.append(
            ResourceCost(
                f"project:{label}",
                "infracost_project",
                "error",
                None,
                None,
                monthly(0),
                hourly(0),
                False,
                messages,
                "unpriced",
            )
        )
    past = _resources(project.get("pastBreakdown"), f"{where}.pastBreakdown")
    current = _resources(project.get("breakdown"), f"{where}.breakdown")
    for address in list(current) + [a for a in past if a not in current]:
        before = past.get(address)
        after = current.get(address)
        rtype = (after or before or ("", None, False))[0]
        before_cost = before[1] if before is not None else None
        after_cost = after[1] if after is not None else None
        if before is None:
            action = "create"
        elif after is None:
            action = "delete"
        else:
            action = "no-op" if before_cost == after_cost else "update"
        if before_cost is None and after_cost is None:
            if action == "no-op":
                # Not part of the change (the built-in pricer skips no-op changes too).
                continue
            usage = any(side[2] for side in (before, after) if side is not None)
            kind, note = (
                ("usage_based", "usage-based or free: Infracost reported no cost")
                if usage
                else ("unpriced", "Infracost reported no price for this resource")
            )
            costs.append(
                ResourceCost(
                    f"{label}:{address}",
                    rtype,
                    action,
                    None,
                    None,
                    monthly(0),
                    hourly(0),
                    kind != "unpriced",
                    (note,),
                    kind,
                )
            )
            continue
        delta = (after_cost or Decimal(0)) - (before_cost or Decimal(0))
        costs.append(
            ResourceCost(
                f"{label}:{address}",
                rtype,
                action,
                None if before_cost is None else monthly(before_cost),
                None if after_cost is None else monthly(after_cost),
                monthly(delta),
                hourly(delta / HOURS_PER_MONTH),
                True,
                (),
                "priced",
            )
        )
    return costs


def _totals(doc: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    diff_monthly = _amount(doc.get("diffTotalMonthlyCost"), "diffTotalMonthlyCost")
    diff_hourly = _amount(doc.get("diffTotalHourlyCost"), "diffTotalHourlyCost")
    if diff_monthly is None:
        total = _amount(doc.get("totalMonthlyCost"), "totalMonthlyCost")
        past = _amount(doc.get("pastTotalMonthlyCost"), "pastTotalMonthlyCost") or Decimal(0)
        if total is None:
            raise PricingError("Infracost output has neither diffTotalMonthlyCost nor totalMonthlyCost")
        diff_monthly = total - past
        if diff_hourly is None:
            total_hourly = _amount(doc.get("totalHourlyCost"), "totalHourlyCost")
            past_hourly = _amount(doc.get("pastTotalHourlyCost"), "pastTotalHourlyCost") or Decimal(0)
            diff_hourly = None if total_hourly is None else total_hourly - past_hourly
    if diff_hourly is None:
        diff_hourly = diff_monthly / HOURS_PER_MONTH
    return monthly(diff_monthly), hourly(diff_hourly)


def _converted(resource: ResourceCost, rate: Decimal, note: str) -> ResourceCost:
    if resource.kind != "priced":
        return resource
    return replace(resource,
                   before_monthly_usd=None if resource.before_monthly_usd is None else
                   monthly(resource.before_monthly_usd * rate),
                   after_monthly_usd=None if resource.after_monthly_usd is None else
                   monthly(resource.after_monthly_usd * rate),
                   monthly_delta_usd=monthly(resource.monthly_delta_usd * rate),
                   hourly_delta_usd=hourly(resource.hourly_delta_usd * rate), notes=(*resource.notes, note))


def read_infracost(doc: Mapping[str, Any], fx_rates: Mapping[str, Decimal] | None = None) -> PlanEstimate:
    """Return the cost delta and per-resource breakdown of Infracost JSON; raise PricingError if invalid.

    `fx_rates` maps a currency code to its value in USD (`{"EUR": Decimal("1.08")}`: 1 EUR = 1.08 USD).
    """
    doc = _mapping(doc, "Infracost output")
    version = doc.get("version")
    if version != SUPPORTED_VERSION:
        raise PricingError(
            f"unsupported Infracost output version {version!r} (expected {SUPPORTED_VERSION!r})"
        )
    currency = doc.get("currency", "USD")
    rate = Decimal(1)
    if currency != "USD":
        if not isinstance(currency, str) or currency.upper() not in (fx_rates or {}):
            raise PricingError(
                f"the Infracost output is priced in {currency!r}, budgets are in USD: re-run Infracost with "
                f"INFRACOST_CURRENCY=USD, or give the rate with --fx-rate {currency}=<USD per {currency}>")
        rate = (fx_rates or {})[currency.upper()]
    projects = _list(doc.get("projects"), "projects")
    resources: list[ResourceCost] = []
    for i, project in enumerate(projects):
        resources += _project_costs(_mapping(project, f"projects[{i}]"), f"projects[{i}]")
    monthly_delta, hourly_delta = _totals(doc)
    if currency != "USD":
        note = f"converted from {currency} at {rate} USD/{currency}"
        resources = [_converted(r, rate, note) for r in resources]
        monthly_delta, hourly_delta = monthly(monthly_delta * rate), hourly(hourly_delta * rate)
    return PlanEstimate(
        monthly_delta_usd=monthly_delta,
        hourly_delta_usd=hourly_delta,
        resources=tuple(resources),
        unpriced=tuple(r for r in resources if not r.priced),
        source="infracost",
    )
