"""The third-party fixtures (`tests/fixtures/third_party`, provenance in its SOURCES.md), read exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "third_party"


def load_json(path: Path) -> Any:
    """Return a fixture's JSON with numbers as Decimal (never float)."""
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
