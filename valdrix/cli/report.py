"""What `valdrix preflight` tells people: the terminal tables and the Markdown PR/MR comment.

Both read the same report (the gate's answer, the pricing breakdown, the outcome), so the comment a pipeline
posts says what the job log says: the decision, each resource's monthly delta with its pricing notes, the
reasons in words, the limit a denial hit and the headroom left, the approval link and what to do next.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from valdrix.cli.continuation import Result

TOP_RESOURCES = 20
# The first line of every comment: a pipeline finds its earlier comment by it and edits it instead of adding one.
MARKER = "<!-- valdrix-preflight {project}/{environment}/{stage} -->"

NEXT_STEPS = {
    0: "The change may be applied; the pipeline continues.",
    1: "Fix the error above and re-run the job.",
    2: "Do not apply. Reduce the change's cost, or ask a budget owner to raise the limit, then run again.",
    3: "A reviewer approves the request (link above, or `valdrix approve <id>`); then re-run this job: the "
       "decision is reused and the approval consumed.",
    4: "Hard stop: the approval token was refused. Do not apply; start a new pipeline run.",
    5: "The plan changed since this run was evaluated: start a new pipeline run for the new plan.",
}


def reason_words(code: str) -> str:
    """Return a reason code in words: the same sentences as the console and `valdrix decisions explain`."""
    from valdrix.decisions.explain import reason_text

    return reason_text(code)


def limits(response: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (label, text) rows for the limits the decision was measured against."""
    context = response.get("computed_context") or {}
    rows: list[tuple[str, str]] = []
    if context.get("budget_limit_usd") is not None:
        rows.append(("Budget", f"{context.get('budget_scope')}: limit ${context['budget_limit_usd']}/month, "
                               f"headroom ${context.get('scope_headroom_usd')}"))
    if "hard_deny_threshold_exceeded" in (response.get("reason_codes") or []) and context.get(
            "hard_deny_above_monthly_usd") is not None:
        rows.append(("Hard-deny limit", f"${context['hard_deny_above_monthly_usd']}/month"))
    return rows


def approval_url(server: str, approval_id: str) -> str:
    """Return the address of an approval request on the gate."""
    return f"{server.rstrip('/')}/console/approvals/{approval_id}"


def _shown(pricing: dict[str, Any]) -> list[dict[str, Any]]:
    resources = [r for r in pricing.get("resources") or [] if r.get("kind") != "free"]
    return sorted(resources, key=lambda r: (-abs(Decimal(r["monthly_delta_usd"])), r.get("kind") != "unpriced",
                                            r["address"]))


def note(resource: dict[str, Any]) -> str:
    """Return what a reader needs to know about a resource's price: unpriced, usage-based, or its assumptions."""
    notes = "; ".join(resource.get("notes") or [])
    kind = resource.get("kind")
    if kind == "unpriced":
        return "UNPRICED: " + notes
    if kind == "usage_based":
        return "usage-based, not priced" + (f" ({notes})" if notes else "")
    return notes


def render(report: dict[str, Any], result: Result, server: str) -> None:
    """Print the decision, its limits and reasons and the cost breakdown as tables, then the outcome line."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Console()
    response = report.get("preflight")
    if response:
        decision = str(response.get("decision"))
        table = Table(title="Valdrix preflight", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("Decision", f"[{_STYLE.get(decision, 'white')}]{decision}[/]")
        table.add_row("Reasons", "\n".join(f"{escape(reason_words(c))} ({c})" for c in
                                           response.get("reason_codes") or []) or "—")
        for label, text in limits(response):
            table.add_row(label, escape(text))
        table.add_row("Mode", f"{response.get('mode')} (policy v{response.get('policy_version')})")
        table.add_row("Run / stage", f"{response.get('run_id')} / {response.get('stage')}")
        table.add_row("Decision id", str(response.get("decision_id")))
        table.add_row("Fingerprint", str(response.get("request_fingerprint")))
        if response.get("approval_request_id"):
            table.add_row("Approval request", f"{response['approval_request_id']}\n"
                                              f"{approval_url(server, response['approval_request_id'])}")
        if response.get("reservation_active"):
            table.add_row("Reserved", f"${response.get('reserved_allocation_usd')} budget + "
                                      f"${response.get('reserved_credit_usd')} credits")
        table.add_row("State file", str(report.get("state_file")))
        out.print(table)
    pricing = report.get("pricing")
    resources = _shown(pricing) if pricing else []
    if pricing and resources:
        table = Table(title=f"Cost change ({pricing.get('source')}): ${pricing.get('monthly_delta_usd')}/month, "
                            f"${pricing.get('hourly_delta_usd')}/hour", title_justify="left")
        table.add_column("Resource", overflow="fold")
        table.add_column("Action")
        for column in ("Before/mo", "After/mo", "Δ/mo"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("Note", max_width=60)
        for r in resources[:TOP_RESOURCES]:
            delta = Decimal(r["monthly_delta_usd"])
            style = "red" if delta > 0 else "green" if delta < 0 else ""
            text = escape(note(r))
            if r.get("kind") == "unpriced":
                text = "[yellow]" + text.replace("UNPRICED:", "UNPRICED[/]:", 1)
            table.add_row(escape(r["address"]), r["action"], r.get("before_monthly_usd") or "—",
                          r.get("after_monthly_usd") or "—", f"[{style}]{delta}[/]" if style else str(delta), text)
        if len(resources) > TOP_RESOURCES:
            table.add_row(f"… {len(resources) - TOP_RESOURCES} more", "", "", "", "", "")
        counts = pricing.get("counts") or {}
        if counts.get("free"):
            table.caption = f"{counts['free']} resource(s) without a cost not shown"
        out.print(table)
    colour = {0: "green", 2: "red", 3: "yellow"}.get(int(result.code), "red")
    out.print(f"[{colour}]exit {int(result.code)} ({result.outcome})[/]: {escape(result.message)}")


_STYLE = {"ALLOW": "green", "ALLOW_WITH_CREDITS": "green", "REQUIRE_APPROVAL": "yellow", "DENY": "red"}
_ICON = {0: "✅", 2: "⛔", 3: "⏳", 4: "⛔", 5: "⚠️"}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any], result: Result, server: str, scope: dict[str, str]) -> str:
    """Return the PR/MR comment: one Markdown document, first line the marker naming project/environment/stage."""
    response = report.get("preflight") or {}
    pricing = report.get("pricing") or {}
    code = int(result.code)
    decision = response.get("decision") or result.outcome
    lines = [MARKER.format(**scope),
             f"### {_ICON.get(code, '❌')} Valdrix preflight: **{decision}** for `{scope['project']}` "
             f"({scope['environment']})", ""]
    if pricing:
        lines.append(f"Monthly cost change: **${pricing.get('monthly_delta_usd')}** "
                     f"(${pricing.get('hourly_delta_usd')}/hour), priced by {pricing.get('source')}.")
    if response:
        lines.append(f"Mode {response.get('mode')}, policy v{response.get('policy_version')}; "
                     f"exit {code} ({result.outcome}).")
    else:
        lines.append(f"Exit {code} ({result.outcome}): {_cell(result.message)}")
    resources = _shown(pricing)
    if resources:
        lines += ["", "| Resource | Action | Before/mo | After/mo | Δ/mo | Note |", "|---|---|--:|--:|--:|---|"]
        for r in resources[:TOP_RESOURCES]:
            lines.append(f"| `{_cell(r['address'])}` | {r['action']} | {r.get('before_monthly_usd') or '—'} | "
                         f"{r.get('after_monthly_usd') or '—'} | {r['monthly_delta_usd']} | {_cell(note(r))} |")
        if len(resources) > TOP_RESOURCES:
            lines.append(f"| … {len(resources) - TOP_RESOURCES} more | | | | | |")
    reasons = response.get("reason_codes") or []
    if reasons or limits(response):
        lines += ["", "**Why**", ""]
        lines += [f"- {reason_words(c)} (`{c}`)" for c in reasons]
        lines += [f"- {label}: {text}" for label, text in limits(response)]
    if response.get("approval_request_id"):
        approval = response["approval_request_id"]
        lines += ["", f"**Approval**: request [`{approval}`]({approval_url(server, approval)}); a reviewer runs "
                      f"`valdrix approve {approval} --notes '…'`."]
    lines += ["", f"**Next**: {NEXT_STEPS.get(code, NEXT_STEPS[1])}"]
    if response.get("decision_id"):
        lines += ["", f"<sub>decision `{response['decision_id']}` · run `{response.get('run_id')}` · stage "
                      f"`{response.get('stage')}`</sub>"]
    return "\n".join(lines) + "\n"
