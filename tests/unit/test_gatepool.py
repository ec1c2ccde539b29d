"""GatePool: gate decisions one (or `capacity`) at a time, first come first served, passing on a stalled turn."""

from __future__ import annotations

import threading
import time

import pytest

from valdrix.gatepool import GatePool, pass_turn


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
    release = threading.Event()
    holding = threading.Event()

    def stuck() -> None:  # a decision waiting for a row lock another transaction holds
        holding.set()
        release.wait(10)

    def now() -> float:
        return time.monotonic()

    with GatePool(threads=4, concurrency=1, patience=0.05) as pool:
        blocker = pool.submit(stuck)
        assert holding.wait(5)
        asked = time.monotonic()
        started = pool.submit(now).result(5)
        assert not release.is_set() and not blocker.done()  # the turn was passed on, not returned
        assert 0.04 <= started - asked < 2.0
        # Passed on twice: a second task behind another stalled one gets a turn too.
        second_hold = threading.Event()
        second = pool.submit(lambda: second_hold.wait(10))
        asked = time.monotonic()
        assert 0.04 <= pool.submit(now).result(5) - asked < 2.0
        second_hold.set()
        release.set()
        blocker.result(5)
        second.result(5)
        # The stalled tasks finishing hand nothing back twice: the next turn is immediate.
        asked = time.monotonic()
        assert pool.submit(now).result(5) - asked < 0.04


def test_tasks_queued_behind_a_running_one_run_on_its_thread_in_order() -> None:
    gate = threading.Event()
    ran: list[tuple[int, str]] = []

    def task(n: int) -> None:
        if n == 0:
            gate.wait(5)
        time.sleep(0.002)
        ran.append((n, threading.current_thread().name))

    with GatePool(threads=4, concurrency=1, patience=10.0) as pool:
        futures = [pool.submit(task, n) for n in range(20)]
        gate.set()
        for f in futures:
            f.result(5)
    assert [n for n, _ in ran] == list(range(20))
    # No thread is woken per task: the one whose task ended took the next itself.
    assert len({name for _, name in ran}) == 1, ran


def test_shut_down_pool_runs_what_was_queued_and_refuses_more() -> None:
    pool = GatePool(threads=2, concurrency=1)
    futures = [pool.submit(time.sleep, 0.01) for _ in range(5)]
    pool.shutdown(wait=True)
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(RuntimeError):
        pool.submit(time.sleep, 0)


def test_pool_returns_results_and_raises_errors() -> None:
    with GatePool(threads=2, concurrency=1) as pool:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result() == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result()
        # The failed task gave its turn back.
        assert pool.submit(lambda: "next").result(timeout=1) == "next"


def test_a_task_that_passes_its_turn_lets_the_next_one_run_while_it_waits() -> None:
    evaluated = threading.Event()
    committing = threading.Event()
    committed = threading.Event()
    probe = Probe()

    def decision() -> None:
        evaluated.wait(10)
        pass_turn()
        pass_turn()  # a second call gives nothing away: the turn is no longer its own
        committing.set()
        committed.wait(10)  # its COMMIT, waiting for the disk

    with GatePool(threads=4, concurrency=1, patience=10.0) as pool:
        first = pool.submit(decision)
        queued = pool.submit(probe.task, 1)  # waits for the turn the first task holds
        time.sleep(0.05)
        assert not queued.done()
        evaluated.set()
        assert committing.wait(5)
        # The queued decision runs as soon as the turn is passed, not after the (here 10 s) patience.
        assert queued.result(5) == 1
        assert not first.done()
        # The turn it was given is still one turn: two more tasks run one at a time.
        futures = [pool.submit(probe.task, n, 0.02) for n in (2, 3)]
        assert [f.result(5) for f in futures] == [2, 3]
        assert probe.most == 1
        committed.set()
        first.result(5)
    pass_turn()  # outside a task of the pool: nothing to give
