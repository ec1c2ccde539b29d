"""Canonical JSON: the one serialisation every hash in Valdrix is computed over."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not canonically serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Return `value` as canonical JSON: sorted keys, compact separators, Decimal as string, ISO datetimes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_default,
                      allow_nan=False)


def sha256_hex(value: Any) -> str:
    """Return the lower-case hex SHA-256 of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the lower-case hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()
