"""The bounded summary of a plan's estimate that a gate request carries: digest, pricing metadata, reference.

The CLI's preflight and the HCP Terraform run task build their decision input from these, so the same plan
yields the same request fingerprint whichever way it reaches the gate.
"""

from __future__ import annotations

from typing import Any

from valdrix.canonical import SCHEME, Scheme, sha256_hex
from valdrix.pricing.terraform import PlanEstimate, ResourceCost

# Bounds on what the request carries about the plan: the gate needs a summary, not the plan.
TOP_RESOURCES = 20
TOP_UNPRICED = 20
MAX_TEXT = 200
MAX_REFERENCE = 512


def change_digest(plan: Any, scheme: Scheme = SCHEME) -> str:
    """Return a hash of what the plan changes (addresses, actions, planned values), not of when it was made.

    A retry that re-plans gets a new plan file (new timestamp, refreshed prior state) but, when nothing
    changed, the same digest; any planned value that differs, even a tag that costs nothing, changes it.
    """
    changes = []
    for rc in plan.get("resource_changes") or []:
        change = rc.get("change") or {}
        if change.get("actions") in (["no-op"], ["read"]):
            continue
        changes.append([rc.get("address"), change.get("actions"), change.get("after"), change.get("after_unknown")])
    return sha256_hex(sorted(changes, key=lambda c: str(c[0])), scheme)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Return `text` cut to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ranked(estimate: PlanEstimate) -> list[ResourceCost]:
    """Return the estimate's resources, largest absolute monthly change first."""
    return sorted(estimate.resources, key=lambda r: (-abs(r.monthly_delta_usd), r.kind != "unpriced", r.address))


def pricing_metadata(estimate: PlanEstimate, digest: str | None) -> dict[str, Any]:
    """Return the bounded pricing summary sent as request metadata (`pricing.unpriced_count` feeds the policy)."""
    costly = [r for r in ranked(estimate) if r.kind != "free"]
    shown = costly[:TOP_RESOURCES]
    unpriced = sorted(estimate.unpriced, key=lambda r: r.address)
    counts: dict[str, int] = {}
    for r in estimate.resources:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    summary: dict[str, Any] = {
        "source": estimate.source,
        "monthly_delta_usd": str(estimate.monthly_delta_usd),
        "hourly_delta_usd": str(estimate.hourly_delta_usd),
        "counts": counts,
        "unpriced_count": len(unpriced),
        "resources": [{"address": clip(r.address), "resource_type": clip(r.resource_type, 64),
                       "action": r.action, "kind": r.kind, "monthly_delta_usd": str(r.monthly_delta_usd)}
                      for r in shown],
        "resources_omitted": len(costly) - len(shown),
        "unpriced": [{"address": clip(r.address), "resource_type": clip(r.resource_type, 64),
                      "reason": clip("; ".join(r.notes))} for r in unpriced[:TOP_UNPRICED]],
        "unpriced_omitted": max(0, len(unpriced) - TOP_UNPRICED),
    }
    if digest is not None:
        summary["change_digest"] = digest
    return summary


def request_metadata(estimate: PlanEstimate, digest: str | None) -> dict[str, Any]:
    """Return the gate request's metadata for a priced plan: the pricing summary and the resource types."""
    metadata: dict[str, Any] = {"pricing": pricing_metadata(estimate, digest)}
    types = sorted({r.resource_type for r in estimate.resources if r.kind != "free"})
    if types:
        # The risk score reads resource classes from here.
        metadata["resource_type"] = clip(", ".join(types), MAX_REFERENCE)
    return metadata


def resource_reference(stack: str, estimate: PlanEstimate | None) -> str:
    """Return `<stack>: <changed addresses, costliest first> (+N more)`, at most 512 characters."""
    if estimate is None or not estimate.resources:
        return clip(stack, MAX_REFERENCE)
    addresses = [r.address for r in ranked(estimate)]
    text = f"{stack}: "
    for i, address in enumerate(addresses):
        rest = len(addresses) - i
        more = f" (+{rest - 1} more)" if rest > 1 else ""
        candidate = text + ("" if i == 0 else ", ") + address
        if len(candidate) + len(more) > MAX_REFERENCE:
            return clip(text.rstrip(", ") + f" (+{rest} more)", MAX_REFERENCE)
        text = candidate
    return text
