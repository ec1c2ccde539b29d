"""Consuming approval tokens: every claim and every expected_* field is bound; forgeries and replays refused."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.pipeline import (
    approve,
    approved_token,
    claims_of,
    consume,
    forge,
    preflight,
    private_key,
    swap_payload,
    unsigned,
)
from tests.live import LiveServer, SigningKeys, Tenant, make_tenant, thread_server
from valdrix.app import create_app
from valdrix.approvals.tokens import KeyRingError, generate_key_file, retire_key_file
from valdrix.config import Settings
from valdrix.migrate import upgrade

OTHER = str(uuid.uuid4())
# Claim → (forged value, expected status, expected code) when the token is re-signed with the real key.
RESIGNED: dict[str, tuple[Any, int, str]] = {
    "iss": ("https://evil.example", 401, "token_issuer_invalid"),
    "aud": ("someone-else", 401, "token_audience_invalid"),
    "sub": (OTHER, 409, "binding_mismatch_sub"),
    "jti": ("f" * 32, 409, "binding_mismatch_jti"),
    "iat": (-10, 409, "binding_mismatch_iat"),
    "nbf": (-10, 409, "binding_mismatch_nbf"),
    "exp": (3600, 409, "binding_mismatch_exp"),
    "tenant_id": (OTHER, 403, "token_tenant_mismatch"),
    "project_id": ("other-project", 409, "binding_mismatch_project_id"),
    "decision_id": (OTHER, 409, "binding_mismatch_decision_id"),
    "approval_id": (OTHER, 409, "binding_mismatch_approval_id"),
    "source": ("k8s_admission", 409, "binding_mismatch_source"),
    "environment": ("nonprod", 409, "binding_mismatch_environment"),
    "request_fingerprint": ("0" * 64, 409, "binding_mismatch_request_fingerprint"),
    "resource_reference": ("module.other", 409, "binding_mismatch_resource_reference"),
    "max_monthly_delta_usd": ("1000000.0000", 409, "binding_mismatch_max_monthly_delta_usd"),
    "max_hourly_delta_usd": ("9.000000", 409, "binding_mismatch_max_hourly_delta_usd"),
    "policy_sha256": ("0" * 64, 409, "binding_mismatch_policy_sha256"),
    "token_type": ("session", 401, "token_type_invalid"),
}
EXPECTED = {
    "expected_source": "k8s_admission",
    "expected_project_id": "other-project",
    "expected_environment": "nonprod",
    "expected_request_fingerprint": "a" * 64,
    "expected_resource_reference": "module.other",
}


def _tampered(claims: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    out = dict(claims)
    out[name] = claims[name] + value if name in ("iat", "nbf", "exp") else value
    return out


def _refused(r: httpx.Response, status: int, code: str) -> None:
    assert (r.status_code, r.json().get("code")) == (status, code), r.text


def test_every_claim_and_expected_field_is_bound(tenant: Tenant, signing_keys: SigningKeys) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    key = private_key(signing_keys.directory, signing_keys.active_kid)
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        gate, token = approved_token(ci, rv)
        claims = claims_of(token)
        assert set(RESIGNED) | {"iat", "nbf", "exp"} <= set(claims)
        for name, (value, status, code) in RESIGNED.items():
            forged = forge(_tampered(claims, name, value), key, signing_keys.active_kid)
            _refused(consume(ci, forged, gate), status, code)
            # Changed without re-signing, every claim breaks the signature.
            _refused(consume(ci, swap_payload(token, _tampered(claims, name, value)), gate), 401,
                     "token_signature_invalid")
        for name in ("iss", "aud", "sub", "jti", "iat", "nbf", "exp"):
            stripped = {k: v for k, v in claims.items() if k != name}
            _refused(consume(ci, forge(stripped, key, signing_keys.active_kid), gate), 401, "token_claim_missing")
        for name in ("tenant_id", "approval_id", "max_monthly_delta_usd"):
            stripped = {k: v for k, v in claims.items() if k != name}
            _refused(consume(ci, forge(stripped, key, signing_keys.active_kid), gate), 401, "token_claim_missing")
        _refused(consume(ci, forge({**claims, "tenant_id": "not-a-uuid"}, key, signing_keys.active_kid), gate), 401,
                 "token_claim_invalid")
        _refused(consume(ci, forge({**claims, "nbf": claims["nbf"] + 3600}, key, signing_keys.active_kid), gate),
                 409, "token_not_yet_valid")
        # Explicit typing (RFC 8725 §3.11): a JWT of another type is not an approval token.
        _refused(consume(ci, forge(claims, key, signing_keys.active_kid, typ="JWT"), gate), 401, "token_typ_invalid")
        for field, value in EXPECTED.items():
            _refused(consume(ci, token, gate, **{field: value}), 409, f"{field}_mismatch")
        missing = {k: v for k, v in gate["continuation"]["binding"].items() if k != "expected_resource_reference"}
        r = ci.post("/api/v1/enforcement/approvals/consume", json={"approval_token": token, **missing})
        assert r.status_code == 422
        # None of the refused attempts burned it.
        assert consume(ci, token, gate).status_code == 200


def test_keys_algorithms_and_tenants(tenant: Tenant, server: LiveServer, signing_keys: SigningKeys) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        gate, token = approved_token(ci, rv)
        claims = claims_of(token)
        retired = serialization.load_pem_private_key(signing_keys.retired_private_pem, password=None)
        # A retired key still listed verifies (authentic → binding checks run); this copy is not the issued token.
        _refused(consume(ci, forge(claims, retired, signing_keys.retired_kid), gate), 409, "token_hash_mismatch")
        # The retired key under the active kid does not verify.
        _refused(consume(ci, forge(claims, retired, signing_keys.active_kid), gate), 401, "token_signature_invalid")
        stranger = Ed25519PrivateKey.generate()
        _refused(consume(ci, forge(claims, stranger, "unknown-kid"), gate), 401, "token_key_unknown")
        _refused(consume(ci, forge(claims, stranger, "../../etc/passwd"), gate), 401, "token_key_unknown")
        hs = forge(claims, secrets.token_bytes(32), signing_keys.active_kid, algorithm="HS256")
        _refused(consume(ci, hs, gate), 401, "token_algorithm_not_allowed")
        _refused(consume(ci, unsigned(claims, signing_keys.active_kid), gate), 401, "token_algorithm_not_allowed")
        _refused(consume(ci, "x" * 40, gate), 401, "token_malformed")
        other = server.tenant()
        with other.client() as foreign:
            _refused(consume(foreign, token, gate), 403, "token_tenant_mismatch")
        assert consume(ci, token, gate).status_code == 200
        text = httpx.get(server.url + "/metrics").text
        for event in ("token_hash_mismatch", "token_key_unknown", "token_algorithm_not_allowed",
                      "token_tenant_mismatch", "consumed"):
            assert f'valdrix_ops_enforcement_approval_token_events_total{{event="{event}"}}' in text


def test_expired_token_and_policy_change(tenant: Tenant, server: LiveServer) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        gate, token = approved_token(ci, rv, run="exp")
        ttl = claims_of(token)["exp"] - claims_of(token)["iat"]
        server.clock.offset = timedelta(seconds=ttl - 2)
        gate2, token2 = approved_token(ci, rv, run="pol")
        server.clock.offset = timedelta(seconds=ttl + 1)
        _refused(consume(ci, token, gate), 409, "token_expired")
        _refused(ci.post(f"/api/v1/enforcement/approvals/{gate['approval_request_id']}/token"), 409, "token_expired")
        doc = ci.get("/api/v1/enforcement/policies").json()["document"]
        doc["execution"]["default_ttl_seconds"] = 1200
        assert ci.put("/api/v1/enforcement/policies", json=doc).status_code == 200
        _refused(consume(ci, token2, gate2), 409, "policy_changed")


def _settings(url: str, keys: Path, active: str) -> Settings:
    return Settings(database_url=url, signing_keys_dir=keys, signing_active_kid=active)


def test_rotation_without_downtime(tmp_path: Path) -> None:
    """Tokens signed before a rotation verify after it while the old key stays listed, and not after removal."""
    url = f"sqlite:///{tmp_path / 'rotation.db'}"
    upgrade(url)
    keys = tmp_path / "keys"
    generate_key_file(keys, "k1")
    with thread_server(_settings(url, keys, "k1"), "sqlite") as before:
        tenant = make_tenant(before.settings, before.url)
        reviewer = tenant.key("reviewer", role="owner")
        with tenant.client() as ci, tenant.client(reviewer) as rv:
            gate_a, token_a = approved_token(ci, rv, run="a")
            gate_b, token_b = approved_token(ci, rv, run="b")
    generate_key_file(keys, "k2")
    retire_key_file(keys, "k1")
    with thread_server(_settings(url, keys, "k2"), "sqlite") as after, httpx.Client(
            base_url=after.url, headers={"Authorization": f"Bearer {tenant.owner_key}"}) as ci:
        assert {k["kid"] for k in httpx.get(after.url + "/.well-known/jwks.json").json()["keys"]} == {"k1", "k2"}
        assert consume(ci, token_a, gate_a).status_code == 200
    (keys / "k1.pem").unlink()
    with thread_server(_settings(url, keys, "k2"), "sqlite") as removed, httpx.Client(
            base_url=removed.url, headers={"Authorization": f"Bearer {tenant.owner_key}"}) as ci:
        _refused(consume(ci, token_b, gate_b), 401, "token_key_unknown")


def test_without_signing_keys_tokens_are_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keyless.db'}"
    upgrade(url)
    with thread_server(Settings(database_url=url), "sqlite") as live:
        tenant = make_tenant(live.settings, live.url)
        reviewer = tenant.key("reviewer", role="owner")
        with tenant.client() as ci, tenant.client(reviewer) as rv:
            gate = preflight(ci)
            _refused(approve(rv, gate["approval_request_id"]), 503, "signing_keys_unavailable")
            assert rv.post(f"/api/v1/enforcement/approvals/{gate['approval_request_id']}/deny",
                           json={}).status_code == 200
        assert httpx.get(live.url + "/.well-known/jwks.json").json() == {"keys": []}


def test_misconfigured_keys_stop_startup(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "keys", "a")
    generate_key_file(tmp_path / "keys", "b")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(KeyRingError, match="SIGNING_ACTIVE_KID"):
        create_app(Settings(database_url=url, signing_keys_dir=tmp_path / "keys"))
    with pytest.raises(KeyRingError, match="no private key"):
        create_app(_settings(url, tmp_path / "keys", "c"))
