"""Notification rules: target filters, the retry schedule, budget threshold crossings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from valdrix.notifications.engine import Backoff, Filters, crossed, matches

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_empty_filters_match_everything_and_set_filters_narrow() -> None:
    assert matches(Filters((), (), ()), "approval.requested", None, None)
    only = Filters(("approval.requested",), ("payments",), ("prod",))
    assert matches(only, "approval.requested", "payments", "prod")
    assert not matches(only, "approval.approved", "payments", "prod")
    assert not matches(only, "approval.requested", "search", "prod")
    assert not matches(only, "approval.requested", "payments", "nonprod")
    assert not matches(only, "approval.requested", None, "prod")  # a filtered project needs a project


def test_backoff_doubles_with_jitter_up_to_the_cap_then_gives_up() -> None:
    schedule = Backoff(base_seconds=10, cap_seconds=60, max_attempts=5)
    assert schedule.next_attempt(1, NOW, 0.5) == NOW + timedelta(seconds=10)
    assert schedule.next_attempt(2, NOW, 0.5) == NOW + timedelta(seconds=20)
    assert schedule.next_attempt(3, NOW, 0.0) == NOW + timedelta(seconds=20)  # 40 s times 0.5
    assert schedule.next_attempt(4, NOW, 0.999) < NOW + timedelta(seconds=90)  # capped at 60 s times 1.5
    assert schedule.next_attempt(5, NOW, 0.5) is None


@given(st.integers(1, 40), st.floats(0, 0.999999))
def test_backoff_waits_between_half_and_one_and_a_half_of_its_capped_delay(attempts: int, jitter: float) -> None:
    schedule = Backoff(base_seconds=2, cap_seconds=300, max_attempts=41)
    wait = (schedule.next_attempt(attempts, NOW, jitter) or NOW) - NOW
    delay = min(300, 2 * 2 ** (attempts - 1))
    assert timedelta(seconds=delay * 0.5) <= wait < timedelta(seconds=delay * 1.5 + 1e-6)


def test_crossed_thresholds() -> None:
    limit = Decimal(1000)
    assert crossed(limit, Decimal(500), Decimal(850), (80, 100)) == [80]
    assert crossed(limit, Decimal(800), Decimal(900), (80, 100)) == []  # 80 % was reached before
    assert crossed(limit, Decimal(799), Decimal(1000), (100, 80)) == [80, 100]
    assert crossed(limit, Decimal(900), Decimal(800), (80,)) == []  # going down crosses nothing
    assert crossed(Decimal(0), Decimal(0), Decimal(10), (80,)) == []


money = st.decimals(min_value=0, max_value=10**6, places=4)


@given(money, money, money, st.lists(st.integers(1, 300), max_size=5))
def test_consecutive_changes_cross_each_threshold_at_most_once(limit: Decimal, a: Decimal, b: Decimal,
                                                                thresholds: list[int]) -> None:
    low, high = sorted((a, b))
    middle = (low + high) / 2
    split = crossed(limit, low, middle, thresholds) + crossed(limit, middle, high, thresholds)
    assert sorted(split) == crossed(limit, low, high, thresholds)
