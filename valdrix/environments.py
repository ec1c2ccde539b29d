"""Environment names: the one normal form every caller's environment is stored in, and its policy column.

Shared by the policy document (routing rules name environments) and the gate (decisions store them), so
neither depends on the other for it: `decisions.engine` reads the policy, never the reverse.
"""

from __future__ import annotations

from typing import Literal

PROD_ENVIRONMENTS = frozenset({"prod", "production", "live"})
NONPROD_ENVIRONMENTS = frozenset({"nonprod", "non-prod", "dev", "development", "test", "testing", "stage", "staging"})


def normalise_environment(raw: str | None) -> str:
    """Return `prod`, `nonprod`, or the trimmed lower-cased name of any other environment."""
    value = (raw or "").strip().lower()
    if value in PROD_ENVIRONMENTS:
        return "prod"
    if value in NONPROD_ENVIRONMENTS or not value:
        return "nonprod"
    return value


def environment_class(environment: str) -> Literal["prod", "nonprod", "default"]:
    """Return the policy column (`prod`, `nonprod` or `default`) a normalised environment reads."""
    if environment == "prod":
        return "prod"
    if environment == "nonprod":
        return "nonprod"
    return "default"
