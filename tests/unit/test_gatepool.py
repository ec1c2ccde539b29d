"""Turns: gate decisions one (or `capacity`) at a time, first come first served, passing on a stalled turn."""

from __future__ import annotations

import threading
import time

import pytest

from valdrix.gatepool import GatePool, Turns


class Probe:
    """Records the order tasks start in and how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started: list[int] = []

    def task(self, n: int, seconds: float = 0.002) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(n)
        time.sleep(seconds)  # a decision's round trips, during which the GIL is free
        with self.lock:
            self.running -= 1
        return n


@pytest.mark.parametrize("capacity", [1, 3])
def test_at_most_capacity_at_once_in_arrival_order(capacity: int) -> None:
    probe = Probe()
    with GatePool(threads=8, concurrency=capacity, patience=10.0) as pool:
        futures = []
        for n in range(24):
            futures.append(pool.submit(probe.task, n))
            time.sleep(0.0005)  # arrivals in a known order
        assert [f.result() for f in futures] == list(range(24))
    assert probe.most == capacity
    assert probe.started == list(range(24))


def test_a_stalled_turn_passes_to_the_next_task() -> None:
    turns = Turns(capacity=1, patience=0.05)
    release = threading.Event()
    holding = threading.Event()

    def stuck() -> None:  # a decision waiting for a row lock another transaction holds
        with turns.turn():
            holding.set()
            release.wait(10)

    blocker = threading.Thread(target=stuck)
    blocker.start()
    assert holding.wait(5)
    asked = time.monotonic()
    with turns.turn():
        waited = time.monotonic() - asked
        assert not release.is_set()  # the stuck one still runs: the turn was passed on, not returned
    release.set()
    blocker.join(5)
    assert 0.04 <= waited < 2.0
    # The stalled task finishing hands nothing back twice: the next turn is immediate.
    asked = time.monotonic()
    with turns.turn():
        assert time.monotonic() - asked < 0.04


def test_released_turn_goes_to_the_first_waiter() -> None:
    turns = Turns(capacity=1, patience=10.0)
    order: list[str] = []
    entered = threading.Event()
    go = threading.Event()

    def first() -> None:
        with turns.turn():
            entered.set()
            go.wait(5)
            order.append("first")

    def later(name: str) -> None:
        with turns.turn():
            order.append(name)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert entered.wait(5)
    for name in ("second", "third", "fourth"):
        threads.append(threading.Thread(target=later, args=(name,)))
        threads[-1].start()
        time.sleep(0.02)  # queued in this order
    go.set()
    for t in threads:
        t.join(5)
    assert order == ["first", "second", "third", "fourth"]


def test_pool_returns_results_and_raises_errors() -> None:
    with GatePool(threads=2, concurrency=1) as pool:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result() == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result()
        # The failed task gave its turn back.
        assert pool.submit(lambda: "next").result(timeout=1) == "next"
