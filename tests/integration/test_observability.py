"""Operator metrics through real HTTP: build info, budget gauges per scope, approval age, requests by route."""

from __future__ import annotations

import re

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from tests.integration.pipeline import preflight, set_budget
from tests.live import LiveServer, Tenant, post
from valdrix import __version__
from valdrix.budgets.metrics import BudgetCollector
from valdrix.db import make_engine, make_sessionmaker


def _samples(text: str, name: str) -> dict[str, float]:
    """Return {label string: value} of one metric's samples."""
    out = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{.*\}})? (\S+)", line)
        if match:
            out[match.group(1) or ""] = float(match.group(2))
    return out


def test_build_info_and_route_templates(tenant: Tenant, server: LiveServer) -> None:
    with tenant.client() as c:
        decision = post(c, "/gate/terraform/preflight", {
            "run_id": "obs", "project_id": "obs", "environment": "nonprod", "resource_reference": "x",
            "estimated_monthly_delta_usd": "1"}).json()
        assert c.get(f"/api/v1/enforcement/decisions/{decision['decision_id']}").status_code == 200
        assert c.get("/api/v1/enforcement/decisions/not-a-uuid").status_code == 422
        assert c.get("/no/such/path/at/all").status_code == 404
    text = httpx.get(server.url + "/metrics").text
    info = _samples(text, "valdrix_build_info")
    assert info == {f'{{component="api",python_version="{_python(info)}",version="{__version__}"}}': 1.0}
    requests = _samples(text, "valdrix_http_requests_total")
    template = 'method="GET",route="/api/v1/enforcement/decisions/{decision_id}"'
    assert requests[f'{{{template},status="200"}}'] >= 1
    assert requests[f'{{{template},status="422"}}'] >= 1
    assert requests['{method="GET",route="unmatched",status="404"}'] >= 1
    # Raw paths never become label values.
    assert decision["decision_id"] not in text and "no/such/path" not in text
    assert _samples(text, "valdrix_http_request_duration_seconds_count")


def _python(info: dict[str, float]) -> str:
    (labels,) = info
    match = re.search(r'python_version="([^"]+)"', labels)
    assert match
    return match.group(1)


def test_budget_gauges_per_scope_and_their_bound(tenant: Tenant, server: LiveServer) -> None:
    with tenant.client() as c:
        set_budget(c, limit="1000", scope="payments")
        preflight(c, run="obs-budget", amount="250")
        today = server.clock.now().date().isoformat()
        assert post(c, "/costs", {"records": [{"scope_key": "payments", "date": today,
                                               "amount_usd": "40.5"}]}).status_code == 200
    engine = make_engine(server.settings)
    try:
        registry = CollectorRegistry()
        registry.register(BudgetCollector(make_sessionmaker(engine), server.clock, 1000))
        text = generate_latest(registry).decode()
        labels = f'{{scope="payments",tenant="{tenant.name}"}}'
        assert _samples(text, "valdrix_ops_enforcement_budget_limit_usd")[labels] == 1000
        assert _samples(text, "valdrix_ops_enforcement_budget_reserved_usd")[labels] == 250
        assert _samples(text, "valdrix_ops_enforcement_budget_spend_mtd_usd")[labels] == 40.5
        assert _samples(text, "valdrix_ops_enforcement_budget_utilisation_ratio")[labels] == 0.25
        assert _samples(text, "valdrix_ops_enforcement_budget_scopes_omitted") == {"": 0}
        # The bound: no scope series at all with a cap of 0, every active scope counted as omitted.
        capped = CollectorRegistry()
        capped.register(BudgetCollector(make_sessionmaker(engine), server.clock, 0))
        text = generate_latest(capped).decode()
        assert not _samples(text, "valdrix_ops_enforcement_budget_limit_usd")
        assert _samples(text, "valdrix_ops_enforcement_budget_scopes_omitted")[""] >= 1
    finally:
        engine.dispose()
    # The server exports the families (with its default cap).
    assert "# TYPE valdrix_ops_enforcement_budget_utilisation_ratio gauge" in httpx.get(server.url + "/metrics").text


def test_oldest_pending_approval_age(tenant: Tenant, server: LiveServer) -> None:
    with tenant.client() as c:
        set_budget(c)
        preflight(c, run="obs-age")
    server.clock.offset += type(server.clock.offset)(seconds=120)
    text = httpx.get(server.url + "/metrics").text
    ages = _samples(text, "valdrix_ops_enforcement_approval_oldest_pending_age_seconds")
    assert ages['{required_permission="approve:prod"}'] >= 120
