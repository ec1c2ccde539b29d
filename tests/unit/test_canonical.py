"""Canonical JSON: one serialisation for every hash."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from valdrix.canonical import canonical_json, sha256_hex


def test_sorted_compact_decimal_and_datetime() -> None:
    value = {"b": Decimal("1.2300"), "a": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))],
             "c": uuid.UUID(int=1), "é": "ü"}
    assert canonical_json(value) == (
        '{"a":["2026-01-02T01:04:05+00:00"],"b":"1.2300","c":"00000000-0000-0000-0000-000000000001",'
        '"\\u00e9":"\\u00fc"}')
    assert sha256_hex({"x": 1, "y": 2}) == sha256_hex({"y": 2, "x": 1})


def test_rejects_non_json_values() -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": object()})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
