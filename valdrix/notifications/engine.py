"""Pure rules of notification: which targets an event goes to, when a failed delivery is tried again, and which
budget thresholds a change crosses. Plain data in, answer out; randomness and clock are passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

EVENT_TYPES = ("approval.requested", "approval.approved", "approval.denied", "approval.expired",
               "approval.revoked", "approval.consumed", "decision.denied", "budget.threshold_crossed")
TEST_EVENT = "notification.test"


@dataclass(frozen=True)
class Filters:
    """A target's filters; an empty tuple matches every value."""

    event_types: Sequence[str]
    project_ids: Sequence[str]
    environments: Sequence[str]


def matches(filters: Filters, event_type: str, project_id: str | None, environment: str | None) -> bool:
    """Return whether an event passes a target's filters (an event without a project or environment passes only
    the targets that do not filter on it)."""
    return ((not filters.event_types or event_type in filters.event_types)
            and (not filters.project_ids or project_id in filters.project_ids)
            and (not filters.environments or environment in filters.environments))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits base·2^(n-1), capped, times a factor in [0.5, 1.5)."""

    base_seconds: float
    cap_seconds: float
    max_attempts: int

    def next_attempt(self, attempts: int, now: datetime, jitter: float) -> datetime | None:
        """Return when to try again after `attempts` failed attempts, or None when the delivery is dead.

        `jitter` is a number in [0, 1), drawn by the caller, so replicas retrying together spread out.
        """
        if attempts >= self.max_attempts:
            return None
        delay = min(self.cap_seconds, self.base_seconds * 2 ** (attempts - 1))
        return now + timedelta(seconds=delay * (0.5 + jitter))


def crossed(limit: Decimal, used_before: Decimal, used_after: Decimal, thresholds: Sequence[int]) -> list[int]:
    """Return the threshold percentages that utilisation crosses going from `used_before` to `used_after`."""
    if limit <= 0 or used_after <= used_before:
        return []
    return sorted(p for p in set(thresholds) if used_before * 100 < limit * p <= used_after * 100)
