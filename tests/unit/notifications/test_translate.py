"""Event → request: Standard Webhooks signatures a receiver verifies, and Slack Block Kit messages."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from valdrix.notifications.translate import slack, webhook

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
PAYLOAD = {"type": "approval.requested", "timestamp": "2026-12-06T10:00:00+00:00", "data": {
    "approval_id": "a1", "project_id": "payments", "environment": "prod", "estimated_monthly_delta_usd": "812.5000",
    "reason_codes": ["budget_exceeded", "prod_change"], "requested_by": "ci-pipeline",
    "console_path": "/console/approvals/a1"}}


def test_webhook_is_signed_per_standard_webhooks() -> None:
    created = datetime.now(UTC)
    request = webhook("evt-1", created, PAYLOAD, SECRET)
    assert request.headers["webhook-id"] == "evt-1"
    assert Webhook(SECRET).verify(request.body, request.headers) == PAYLOAD
    tampered = request.body.replace(b"812.5000", b"1.0000")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, request.headers)
    # The same event signs to the same body and headers every time it is delivered.
    assert webhook("evt-1", created, PAYLOAD, SECRET) == request


def test_slack_message_names_what_a_reviewer_needs_and_links_the_console() -> None:
    message = json.loads(slack(PAYLOAD, "https://gate.example.com/").body)
    assert message["text"] == "Approval requested · payments · prod"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in message["blocks"][1]["fields"]}
    assert fields == {"*Project*": "payments", "*Environment*": "prod", "*Amount*": "$812.5000/month",
                      "*Reasons*": "budget_exceeded, prod_change", "*Requester*": "ci-pipeline"}
    button = message["blocks"][-1]["elements"][0]
    assert button["url"] == "https://gate.example.com/console/approvals/a1" and button["style"] == "primary"


def test_slack_budget_threshold_message() -> None:
    payload = {"type": "budget.threshold_crossed", "data": {
        "scope_key": "payments", "threshold_percent": 80, "utilisation_percent": "85.0",
        "monthly_limit_usd": "1000.0000", "console_path": "/console/budgets"}}
    message = json.loads(slack(payload, "http://x").body)
    assert message["blocks"][0]["text"]["text"] == "Budget threshold crossed"
    assert "*Threshold*\n80 % (85.0 % used of $1000.0000)" in [f["text"] for f in message["blocks"][1]["fields"]]
