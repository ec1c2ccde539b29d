"""Bad input, authentication and roles: always a clear 4xx problem document, never a 500, nothing written."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_gate_flow import preflight
from tests.live import LiveServer, Tenant, post

GOOD = preflight("10")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({**GOOD, "surprise": 1}, 422, "invalid_request"),
    ({**GOOD, "estimated_monthly_delta_usd": "-1"}, 422, "invalid_request"),
    ({**GOOD, "estimated_monthly_delta_usd": "1e13"}, 422, "invalid_request"),
    ({**GOOD, "estimated_monthly_delta_usd": "NaN"}, 422, "invalid_request"),
    ({**GOOD, "estimated_monthly_delta_usd": "Infinity"}, 422, "invalid_request"),
    ({**GOOD, "estimated_monthly_delta_usd": [1]}, 422, "invalid_request"),
    ({**GOOD, "run_id": 5}, 422, "invalid_request"),
    ({**GOOD, "metadata": "x"}, 422, "invalid_request"),
    ({**GOOD, "resource_reference": ""}, 422, "invalid_request"),
    ({**GOOD, "expected_request_fingerprint": "zz"}, 422, "invalid_request"),
    ({k: v for k, v in GOOD.items() if k != "run_id"}, 422, "invalid_request"),
    ([GOOD], 422, "invalid_request"),
])
def test_invalid_bodies(tenant: Tenant, body: object, status: int, code: str) -> None:
    with tenant.client() as c:
        r = post(c, "/gate/terraform/preflight", body)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert c.get("/api/v1/enforcement/decisions").json()["items"] == []


def test_malformed_json_oversize_and_content_type(tenant: Tenant) -> None:
    with tenant.client() as c:
        url = "/api/v1/enforcement/gate/terraform/preflight"
        r = c.post(url, content=b'{"run_id": ', headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["code"]) == (400, "malformed_json")
        r = c.post(url, content=b"run_id=1", headers={"content-type": "application/x-www-form-urlencoded"})
        assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type")
        big = {**GOOD, "metadata": {"blob": "x" * (1024 * 1024 + 10)}}
        r = post(c, "/gate/terraform/preflight", big)
        assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")

        def chunks() -> object:
            yield b'{"run_id": "r", "metadata": {"blob": "'
            for _ in range(1100):
                yield b"x" * 1024
            yield b'"}}'

        r = c.post(url, content=chunks(), headers={"content-type": "application/json"})  # type: ignore[arg-type]
        assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")
        assert c.get("/api/v1/enforcement/decisions").json()["items"] == []


def test_bad_ids_and_cursors(tenant: Tenant) -> None:
    with tenant.client() as c:
        r = c.get("/api/v1/enforcement/decisions/not-a-uuid")
        assert (r.status_code, r.json()["code"]) == (422, "invalid_request")
        r = c.get("/api/v1/enforcement/decisions/00000000-0000-0000-0000-000000000000")
        assert (r.status_code, r.json()["code"]) == (404, "decision_not_found")
        assert c.get("/api/v1/enforcement/decisions", params={"cursor": "!!"}).json()["code"] == "invalid_cursor"
        assert c.get("/api/v1/enforcement/ledger", params={"cursor": "x"}).json()["code"] == "invalid_cursor"
        assert c.get("/api/v1/enforcement/nope").json()["code"] == "not_found"


def test_authentication_and_roles(server: LiveServer, tenant: Tenant) -> None:
    anonymous = httpx.post(server.url + "/api/v1/enforcement/gate/terraform/preflight", json=GOOD)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "missing_credentials")
    with tenant.client(key="vxk_not-a-key") as c:
        assert post(c, "/gate/terraform/preflight", GOOD).json()["code"] == "invalid_credentials"
    member = tenant.key("ci", role="member")
    with tenant.client(key=member) as c:
        assert post(c, "/gate/terraform/preflight", GOOD).status_code == 200
        r = c.put("/api/v1/enforcement/budgets", json={"budgets": [{"scope_key": "x", "monthly_limit_usd": 1}]})
        assert (r.status_code, r.json()["code"]) == (403, "insufficient_role")
        assert c.get("/api/v1/enforcement/ledger").status_code == 403


def test_key_revocation(tenant: Tenant) -> None:
    from valdrix.auth import service as auth
    from valdrix.clock import SystemClock
    from valdrix.db import make_engine, make_sessionmaker, transaction

    key = tenant.key("temp", role="member")
    with tenant.client(key=key) as c:
        assert c.get("/api/v1/enforcement/budgets").status_code == 200
        engine = make_engine(tenant.settings)
        with transaction(make_sessionmaker(engine)) as session:
            row = next(k for k, p in auth.list_keys(session, tenant.id) if p.name == "temp")
            auth.revoke_key(session, row.id, now=SystemClock().now())
        engine.dispose()
        r = c.get("/api/v1/enforcement/budgets")
        assert (r.status_code, r.json()["code"]) == (401, "invalid_credentials")


def test_tenants_are_isolated(server: LiveServer, tenant: Tenant) -> None:
    other = server.tenant()
    with tenant.client() as c:
        decision_id = post(c, "/gate/terraform/preflight", GOOD).json()["decision_id"]
    with other.client() as c:
        assert c.get(f"/api/v1/enforcement/decisions/{decision_id}").status_code == 404
        assert c.get("/api/v1/enforcement/decisions").json()["items"] == []
        assert c.get("/api/v1/enforcement/ledger").json()["items"] == []
