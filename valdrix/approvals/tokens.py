"""The signing key ring and approval tokens: typed JWTs signed by the active key, verified by any listed key.

Keys live in `VALDRIX_SIGNING_KEYS_DIR` as `<kid>.pem`: a private Ed25519 key can sign and verify, a public
one only verifies (a retired key kept listed until every token it signed has expired). Verification takes
the algorithm from the deployment, never from the token (RFC 8725 §3.1), and a `kid` only selects a key
from this ring (§3.10). Time claims are checked by the caller against the injected clock, not by PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from valdrix.config import Settings
from valdrix.errors import Unauthenticated

__all__ = ["ALGORITHMS", "KID_PATTERN", "TOKEN_TYPE", "TYP", "KeyRing", "KeyRingError", "generate_key_file",
           "retire_key_file"]

TYP = "valdrix-approval+jwt"
TOKEN_TYPE = "valdrix.approval.v1"
ALGORITHMS = ("EdDSA", "HS256")
KID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Registered claims every approval token must carry; the private claims are checked by the approvals service.
REGISTERED_CLAIMS = ("iss", "aud", "sub", "jti", "iat", "nbf", "exp")
_MIN_HS256_SECRET_BYTES = 32
_SEAL_INFO = b"valdrix approval token seal v1"


class KeyRingError(Exception):
    """The configured signing keys are unusable (missing, unreadable, ambiguous or of the wrong type)."""


@dataclass(frozen=True)
class KeyRing:
    """One active signing key and every key still accepted for verification, of one algorithm."""

    algorithm: str
    active_kid: str
    issuer: str
    audience: str
    private_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    public_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    hs256_secret: bytes = b""

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing | None:
        """Return the configured ring, None when no keys are configured; raise KeyRingError when misconfigured."""
        algorithm = settings.token_algorithm
        if algorithm not in ALGORITHMS:
            raise KeyRingError(f"VALDRIX_TOKEN_ALGORITHM must be one of {ALGORITHMS}, not {algorithm!r}")
        if algorithm == "HS256":
            secret = (settings.token_hs256_secret or "").encode()
            if len(secret) < _MIN_HS256_SECRET_BYTES:
                raise KeyRingError("HS256 needs VALDRIX_TOKEN_HS256_SECRET of at least 32 random bytes")
            kid = settings.signing_active_kid or "hs256"
            _check_kid(kid)
            return cls(algorithm=algorithm, active_kid=kid, issuer=settings.token_issuer,
                       audience=settings.token_audience, hs256_secret=secret)
        if settings.signing_keys_dir is None:
            return None
        return cls.from_directory(settings.signing_keys_dir, settings.signing_active_kid,
                                  issuer=settings.token_issuer, audience=settings.token_audience)

    @classmethod
    def from_directory(cls, directory: Path, active_kid: str | None, *, issuer: str, audience: str) -> KeyRing:
        """Return the Ed25519 ring of `<kid>.pem` files in `directory`; raise KeyRingError when unusable."""
        if not directory.is_dir():
            raise KeyRingError(f"signing keys directory {directory} does not exist")
        private: dict[str, Ed25519PrivateKey] = {}
        public: dict[str, Ed25519PublicKey] = {}
        for path in sorted(directory.glob("*.pem")):
            kid = path.stem
            _check_kid(kid)
            key = _load_pem(path)
            if isinstance(key, Ed25519PrivateKey):
                private[kid] = key
                public[kid] = key.public_key()
            else:
                public[kid] = key
        if active_kid is None:
            if len(private) != 1:
                raise KeyRingError(f"{len(private)} private keys in {directory}: set VALDRIX_SIGNING_ACTIVE_KID")
            active_kid = next(iter(private))
        if active_kid not in private:
            raise KeyRingError(f"active kid {active_kid!r} has no private key file {directory}/{active_kid}.pem")
        return cls(algorithm="EdDSA", active_kid=active_kid, issuer=issuer, audience=audience,
                   private_keys=private, public_keys=public)

    def sign_token(self, claims: dict[str, Any]) -> str:
        """Return `claims` as a JWT signed by the active key, with `kid` and the approval `typ` in its header."""
        key: Any = self.hs256_secret if self.algorithm == "HS256" else self.private_keys[self.active_kid]
        return jwt.encode(claims, key, algorithm=self.algorithm, headers={"kid": self.active_kid, "typ": TYP})

    def verify_token(self, token: str) -> dict[str, Any]:
        """Return the claims of an authentic token; raise Unauthenticated (401) with the reason's code otherwise.

        Checked: header `typ`, `alg` against this deployment's one algorithm, `kid` in the ring, the signature,
        `iss`, `aud` and presence of the registered claims. Time claims are left to the caller's clock.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("approval token is not a well-formed JWT", code="token_malformed") from exc
        if header.get("typ") != TYP:
            raise Unauthenticated(f"approval token header typ must be {TYP!r}", code="token_typ_invalid")
        if header.get("alg") != self.algorithm:
            raise Unauthenticated(f"approval tokens of this deployment are signed with {self.algorithm}",
                                  code="token_algorithm_not_allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_PATTERN.match(kid) or not self._knows(kid):
            raise Unauthenticated("approval token key id is not in the key ring", code="token_key_unknown")
        key: Any = self.hs256_secret if self.algorithm == "HS256" else self.public_keys[kid]
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[self.algorithm], audience=self.audience, issuer=self.issuer,
                options={"require": list(REGISTERED_CLAIMS), "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False})
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("approval token signature is invalid", code="token_signature_invalid") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("approval token audience is wrong", code="token_audience_invalid") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("approval token issuer is wrong", code="token_issuer_invalid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"approval token lacks claim {exc.claim!r}", code="token_claim_missing") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("approval token is malformed", code="token_malformed") from exc
        return claims

    def sign_bytes(self, data: bytes) -> tuple[str, bytes]:
        """Return (kid, signature) of `data` under the active key (Ed25519, or HMAC-SHA256 for HS256)."""
        if self.algorithm == "HS256":
            return self.active_kid, hmac.new(self.hs256_secret, data, hashlib.sha256).digest()
        return self.active_kid, self.private_keys[self.active_kid].sign(data)

    def verify_bytes(self, data: bytes, kid: str, signature: bytes) -> bool:
        """Return whether `signature` over `data` was made by the ring's key `kid`."""
        if not self._knows(kid):
            return False
        if self.algorithm == "HS256":
            return hmac.compare_digest(hmac.new(self.hs256_secret, data, hashlib.sha256).digest(), signature)
        try:
            self.public_keys[kid].verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def jwks(self) -> dict[str, Any]:
        """Return the public keys as a JWK Set (empty for HS256: a shared secret is never published)."""
        keys = []
        for kid, key in sorted(self.public_keys.items()):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            keys.append({"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "alg": "EdDSA",
                         "use": "sig"})
        return {"keys": keys}

    def seal(self, plaintext: str, context: str) -> str:
        """Return `plaintext` encrypted (AES-256-GCM) under a key derived from the active signing key."""
        nonce = os.urandom(12)
        sealed = AESGCM(self._seal_key(self.active_kid, context)).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.active_kid}.{_b64url(nonce + sealed)}"

    def unseal(self, blob: str, context: str) -> str | None:
        """Return what `seal` sealed for `context`, or None when its key is gone or the blob was altered."""
        kid, _, body = blob.partition(".")
        if self.algorithm == "EdDSA" and kid not in self.private_keys:
            return None
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = AESGCM(self._seal_key(kid, context)).decrypt(raw[:12], raw[12:], context.encode())
        except (InvalidTag, ValueError):
            return None
        return plain.decode()

    def _seal_key(self, kid: str, context: str) -> bytes:
        if self.algorithm == "HS256":
            material = self.hs256_secret
        else:
            material = self.private_keys[kid].private_bytes(serialization.Encoding.Raw,
                                                            serialization.PrivateFormat.Raw,
                                                            serialization.NoEncryption())
        return HKDF(hashes.SHA256(), 32, salt=context.encode(), info=_SEAL_INFO).derive(material)

    def _knows(self, kid: str) -> bool:
        return kid == self.active_kid if self.algorithm == "HS256" else kid in self.public_keys


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _check_kid(kid: str) -> None:
    if not KID_PATTERN.match(kid):
        raise KeyRingError(f"key id {kid!r} must match {KID_PATTERN.pattern}")


def _load_pem(path: Path) -> Ed25519PrivateKey | Ed25519PublicKey:
    try:
        data = path.read_bytes()
        key: Any = (serialization.load_pem_public_key(data) if b"PUBLIC KEY" in data
                    else serialization.load_pem_private_key(data, password=None))
    except (OSError, ValueError, TypeError) as exc:
        raise KeyRingError(f"cannot read signing key {path}: {exc}") from exc
    if not isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey)):
        raise KeyRingError(f"{path} is not an Ed25519 key")
    return key


def generate_key_file(directory: Path, kid: str) -> Path:
    """Write a new Ed25519 private key as `<directory>/<kid>.pem` (mode 0600) and return its path."""
    _check_kid(kid)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{kid}.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def retire_key_file(directory: Path, kid: str) -> Path:
    """Replace `<kid>.pem` by its public key (verify-only) and return its path; raise KeyRingError if absent."""
    _check_kid(kid)
    path = directory / f"{kid}.pem"
    key = _load_pem(path)
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    tmp = path.with_suffix(".pem.tmp")
    tmp.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tmp.replace(path)
    return path
