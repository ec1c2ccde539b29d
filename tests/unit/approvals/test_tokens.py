"""The key ring: sign/verify, algorithm allow-list, rotation, JWKS without secrets, byte signing, sealing."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from valdrix.approvals.tokens import TYP, KeyRing, KeyRingError, generate_key_file, retire_key_file
from valdrix.config import Settings
from valdrix.errors import Unauthenticated

CLAIMS = {"iss": "valdrix-gate", "aud": "valdrix-enforcement-consume", "sub": "s", "jti": "j", "iat": 1, "nbf": 1,
          "exp": 2}


def _ring(directory: Path, active: str | None) -> KeyRing:
    ring = KeyRing.from_settings(Settings(signing_keys_dir=directory, signing_active_kid=active))
    assert ring is not None
    return ring


def _code(ring: KeyRing, token: str) -> str:
    with pytest.raises(Unauthenticated) as exc:
        ring.verify_token(token)
    return exc.value.code


def test_sign_verify_rotate_and_retire(tmp_path: Path) -> None:
    generate_key_file(tmp_path, "k1")
    old = _ring(tmp_path, None)
    token = old.sign_token(CLAIMS)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": "k1", "typ": TYP}
    # PyJWT's own exp check is off: time is judged by the caller's clock (exp=2 is long past).
    assert old.verify_token(token)["jti"] == "j"
    generate_key_file(tmp_path, "k2")
    retire_key_file(tmp_path, "k1")
    new = _ring(tmp_path, "k2")
    assert new.verify_token(token)["sub"] == "s"
    assert jwt.get_unverified_header(new.sign_token(CLAIMS))["kid"] == "k2"
    jwks = new.jwks()
    assert [k["kid"] for k in jwks["keys"]] == ["k1", "k2"] and all("d" not in k for k in jwks["keys"])
    kid, signature = new.sign_bytes(b"manifest")
    assert kid == "k2" and new.verify_bytes(b"manifest", kid, signature)
    assert not new.verify_bytes(b"manifest!", kid, signature) and not new.verify_bytes(b"manifest", "k9", signature)
    with pytest.raises(KeyRingError):
        _ring(tmp_path, "k1")  # a retired (public-only) key cannot be made active


def test_refusals(tmp_path: Path) -> None:
    generate_key_file(tmp_path, "k1")
    ring = _ring(tmp_path, "k1")
    assert _code(ring, "not.a.jwt") == "token_malformed"
    assert _code(ring, jwt.encode(CLAIMS, "x" * 32, algorithm="HS256", headers={"kid": "k1", "typ": TYP})) == \
        "token_algorithm_not_allowed"
    assert _code(ring, jwt.encode(CLAIMS, None, algorithm="none", headers={"kid": "k1", "typ": TYP})) == \
        "token_algorithm_not_allowed"
    good = ring.sign_token(CLAIMS)
    assert _code(ring, ring.sign_token({**CLAIMS, "aud": "x"})) == "token_audience_invalid"
    assert _code(ring, ring.sign_token({**CLAIMS, "iss": "x"})) == "token_issuer_invalid"
    assert _code(ring, ring.sign_token({k: v for k, v in CLAIMS.items() if k != "jti"})) == "token_claim_missing"
    head, payload, sig = good.split(".")
    assert _code(ring, f"{head}.{payload}.{sig[:-4]}AAAA") == "token_signature_invalid"


def test_hs256_is_optional_and_never_published() -> None:
    with pytest.raises(KeyRingError):
        KeyRing.from_settings(Settings(token_algorithm="HS256", token_hs256_secret="short"))
    ring = KeyRing.from_settings(Settings(token_algorithm="HS256", token_hs256_secret="s" * 32))
    assert ring is not None and ring.jwks() == {"keys": []}
    assert ring.verify_token(ring.sign_token(CLAIMS))["sub"] == "s"
    assert KeyRing.from_settings(Settings()) is None  # no keys configured: tokens are unavailable (503)


def test_seal_round_trip(tmp_path: Path) -> None:
    generate_key_file(tmp_path, "k1")
    ring = _ring(tmp_path, "k1")
    blob = ring.seal("token", "approval-1")
    assert "token" not in blob and ring.unseal(blob, "approval-1") == "token"
    assert ring.unseal(blob, "approval-2") is None
    assert ring.unseal(blob[:-2] + "AA", "approval-1") is None
    retire_key_file(tmp_path, "k1")
    generate_key_file(tmp_path, "k2")
    assert _ring(tmp_path, "k2").unseal(blob, "approval-1") is None
