"""An outbox event → the HTTP request each kind of target receives.

A webhook gets the event's JSON payload signed per the Standard Webhooks specification (`webhook-id` is the
event id, the same on every delivery of it); Slack gets a Block Kit message with a button to the console page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from standardwebhooks import Webhook

TITLES = {
    "approval.requested": "Approval requested",
    "approval.approved": "Approved",
    "approval.denied": "Approval denied",
    "approval.expired": "Approval expired",
    "approval.revoked": "Approval revoked",
    "approval.consumed": "Approval used",
    "decision.denied": "Change denied",
    "budget.threshold_crossed": "Budget threshold crossed",
    "notification.test": "Test notification",
}


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


def webhook(event_id: str, created_at: datetime, payload: dict[str, Any], secret: str) -> Request:
    """Return the signed Standard Webhooks request for an event."""
    body = _dumps(payload)
    signature = Webhook(secret).sign(event_id, created_at, body.decode())
    return Request(body, {"content-type": "application/json", "webhook-id": event_id,
                          "webhook-timestamp": str(int(created_at.timestamp())), "webhook-signature": signature})


def slack(payload: dict[str, Any], public_url: str) -> Request:
    """Return the Slack incoming-webhook request (Block Kit) for an event."""
    data: dict[str, Any] = payload.get("data", {})
    title = TITLES.get(str(payload.get("type")), str(payload.get("type")))
    facts = [("Project", data.get("project_id") or data.get("scope_key")), ("Environment", data.get("environment")),
             ("Amount", f"${data['estimated_monthly_delta_usd']}/month" if "estimated_monthly_delta_usd" in data
              else None),
             ("Reasons", ", ".join(data.get("reason_codes") or []) or None),
             ("Requester", data.get("requested_by")), ("By", data.get("actor")),
             ("Threshold", f"{data['threshold_percent']} % ({data.get('utilisation_percent')} % used of "
                           f"${data.get('monthly_limit_usd')})" if "threshold_percent" in data else None),
             ("Resource", data.get("resource_reference"))]
    fields = [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in facts if value]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    if data.get("message"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": str(data["message"])}})
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    if data.get("console_path"):
        link = public_url.rstrip("/") + str(data["console_path"])
        label = "Review" if payload.get("type") == "approval.requested" else "Open in Valdrix"
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label}, "url": link,
             **({"style": "primary"} if label == "Review" else {})}]})
    text = " · ".join(str(v) for v in (title, data.get("project_id"), data.get("environment")) if v)
    return Request(_dumps({"text": text, "blocks": blocks}), {"content-type": "application/json"})


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
