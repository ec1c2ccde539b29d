"""The threads gate decisions run on in a worker process, taking turns.

On a machine whose CPUs the database shares, decisions running side by side in one process only interleave
on the GIL: each waits for the others' Python between its own round trips, and the handovers cost CPU. Measured
with `bench/gate.py` on 2 cores at 8 concurrent callers, one decision at a time per process gave p99 18-19.5 ms
where four side by side gave 30-48.5 ms, with 10 % more decisions per second. A decision waiting for a row lock,
though, must not hold up unrelated ones: a turn held longer than the patience passes to the next decision.
A remote database (decisions mostly waiting for round trips) wants more turns: VALDRIX_GATE_CONCURRENCY.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# A decision here takes 2-6 ms; one holding its turn much longer is most likely waiting for a lock. Not
# shorter: a decision merely descheduled for a moment would hand over too, and two would interleave again
# (six paired runs at 8 callers: median p99 21.9 ms at 10 ms, 17.9 ms at 30 ms, and 15 % more decisions/s).
PATIENCE_SECONDS = 0.030


class Turns:
    """At most `capacity` tasks hold a turn at once, first come first served.

    A holder that keeps its turn longer than `patience` seconds loses it to the next waiting task (and runs on
    without one), so a task stuck on a lock delays the others by `patience` at most.
    """

    def __init__(self, capacity: int, patience: float) -> None:
        self.capacity, self.patience = capacity, patience
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()
        self._holders: dict[object, float] = {}  # holder -> when it took its turn; first is the oldest

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for a turn, hold it for the block, then pass it on."""
        me = object()
        with self._changed:
            self._waiting.append(me)
            while (wait := self._take(me, time.monotonic())) != 0.0:
                self._changed.wait(wait)
        try:
            yield
        finally:
            with self._changed:
                self._holders.pop(me, None)
                self._changed.notify_all()

    def _take(self, me: object, now: float) -> float | None:
        """Take a turn and return 0.0; else return how long to wait (None: until the turns change)."""
        if self._waiting[0] is not me:
            return None
        if len(self._holders) >= self.capacity:
            oldest, since = next(iter(self._holders.items()))
            if now - since < self.patience:
                return since + self.patience - now
            del self._holders[oldest]  # stalled: its turn passes on
        self._waiting.popleft()
        self._holders[me] = now
        self._changed.notify_all()
        return 0.0


class GatePool(ThreadPoolExecutor):
    """A thread pool whose tasks run in `Turns`: `concurrency` at a time, more only while some stall."""

    def __init__(self, threads: int, concurrency: int, patience: float = PATIENCE_SECONDS) -> None:
        super().__init__(max_workers=threads, thread_name_prefix="gate")
        self.turns = Turns(concurrency, patience)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return super().submit(self._in_turn, partial(fn, *args, **kwargs))

    def _in_turn(self, call: Callable[[], T]) -> T:
        with self.turns.turn():
            return call()
