"""The threads gate decisions run on in a worker process, taking turns.

On a machine whose CPUs the database shares, decisions running side by side in one process only interleave
on the GIL: each waits for the others' Python between its own round trips, and the handovers cost CPU. Measured
with `bench/gate.py` on 2 cores at 8 concurrent callers, one decision at a time per process gave p99 18-19.5 ms
where four side by side gave 30-48.5 ms, with 10 % more decisions per second. A decision waiting for a row lock,
though, must not hold up unrelated ones: a turn held longer than the patience passes to the next decision.
A remote database (decisions mostly waiting for round trips) wants more turns: VALDRIX_GATE_CONCURRENCY.

A decision about to commit passes its turn on (`pass_turn`): its COMMIT waits for the database to flush the
WAL to disk (0.29 ms on average under load here), which the next decision's Python can use. With durable
PostgreSQL at 8 concurrent callers it gave 4 % more decisions per second (14 paired runs, ahead in 10). The
priced admission does not pass its turn: at 200 reviews/s its decisions seldom queue for a turn, and in the
benchmark's worst case, one budget row for all, the next decision would only wait for that row's lock instead
(p99 4.3, 6.3, 6.5, 9.8 and 9.9 ms in 5 runs with it; 4.3, 5.6 and 6.6 ms in 3 without).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# A decision here takes 2-6 ms; one holding its turn much longer is most likely waiting for a lock. Not
# shorter: a decision merely descheduled for a moment would hand over too, and two would interleave again
# (six paired runs at 8 callers: median p99 21.9 ms at 10 ms, 17.9 ms at 30 ms, and 15 % more decisions/s).
PATIENCE_SECONDS = 0.030

# In a pool thread running a task: the pool and the task's turn token.
_running = threading.local()


def pass_turn() -> None:
    """Give the running task's turn to the next queued task, when called from a task holding one.

    The caller runs on without a turn, as a task whose patience ran out does; elsewhere this does nothing.
    """
    pool, me = getattr(_running, "turn", (None, None))
    if pool is not None:
        pool._pass(me)


class GatePool(Executor):
    """Runs tasks in arrival order on up to `threads` threads, at most `concurrency` at a time.

    A task that keeps its turn longer than `patience` seconds loses it to the next queued task (and runs on
    without one), so a task stuck on a lock delays the others by `patience` at most; a task may also pass its
    turn on itself (`pass_turn`). A thread whose task ends takes the next queued task itself: under load a task
    that keeps its turn to the end costs no thread wake-up besides the event loop's (waking a waiting thread per
    decision measured 0.18 ms of CPU per request); one that passes it on wakes a thread for the next task.
    """

    def __init__(self, threads: int, concurrency: int, patience: float = PATIENCE_SECONDS) -> None:
        self.threads, self.capacity, self.patience = threads, concurrency, patience
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        self._holders: dict[object, float] = {}  # task -> when it took its turn; first is the oldest
        self._idle = 0  # threads waiting for a task or a turn
        self._timing = False  # one idle thread is waiting for the oldest turn's patience to run out
        self._started: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            self._queue.append((future, partial(fn, *args, **kwargs)))
            self._staff()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; queued ones still run unless `cancel_futures`; wait for the threads if `wait`."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._work.notify_all()
        if wait:
            for thread in self._started:
                thread.join()

    def _pass(self, me: object) -> None:
        with self._lock:
            if self._holders.pop(me, None) is not None:
                self._staff()

    def _staff(self) -> None:
        """See that a thread looks at the queue: one runs the first task now if a turn is free, or else waits
        for the oldest turn's patience to run out. Called with the lock held."""
        if not self._queue or (self._timing and len(self._holders) >= self.capacity):
            return
        if self._idle:
            self._work.notify()
        elif len(self._started) < self.threads:
            thread = threading.Thread(target=self._serve, name=f"gate-{len(self._started)}", daemon=True)
            self._started.append(thread)
            thread.start()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while (wait := self._turn(now := time.monotonic())) != 0.0:
                    if self._closed and not self._queue:
                        return
                    self._idle += 1
                    if wait is not None:
                        self._timing = True
                    self._work.wait(wait)
                    if wait is not None:
                        self._timing = False
                    self._idle -= 1
                future, call = self._queue.popleft()
                me = object()
                self._holders[me] = now
                self._staff()
            if future.set_running_or_notify_cancel():
                _running.turn = (self, me)
                try:
                    future.set_result(call())
                except BaseException as exc:  # the caller gets it through the future
                    future.set_exception(exc)
                finally:
                    del _running.turn
            with self._lock:
                self._holders.pop(me, None)  # absent when its turn was passed on

    def _turn(self, now: float) -> float | None:
        """Return 0.0 when the first queued task may run now, else how long to wait (None: until woken)."""
        if not self._queue:
            return None
        if len(self._holders) < self.capacity:
            return 0.0
        oldest, since = next(iter(self._holders.items()))
        if now - since < self.patience:
            return None if self._timing else since + self.patience - now
        del self._holders[oldest]  # stalled: its turn passes on
        return 0.0
