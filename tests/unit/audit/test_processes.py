"""Formatting processes: results in batch order whichever side formats a batch; a dead process fails the export
with a code and the pool starts afresh."""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valdrix.audit.processes import ColumnBatch, FormattingPool
from valdrix.errors import Unavailable


def tagged(delay: float, rows: Sequence[tuple[Any, ...]]) -> tuple[int, list[int]]:
    """A picklable job: the process that ran it and the batch's values, after `delay` seconds."""
    time.sleep(delay)
    return os.getpid(), [value for (value,) in rows]


def dies(parent: int, rows: Sequence[tuple[Any, ...]]) -> None:
    """A job whose formatting process is killed while it runs (as by the OOM killer); `parent` runs it unharmed."""
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)


def batches(count: int, size: int = 3) -> Iterator[list[tuple[int]]]:
    for b in range(count):
        yield [(b * size + i,) for i in range(size)]


def started(pool: FormattingPool) -> Future[None] | None:
    """Start the pool's processes and wait until they answer; return what `start` returned."""
    future = pool.start()
    if future is not None:
        future.result(timeout=60)
    return future


def formatted_in_order(pool: FormattingPool, count: int) -> set[int]:
    """Run `count` batches through `pool`, check they come back in order, and return the processes that ran them."""
    results = list(pool.ordered(functools.partial(tagged, 0.01), batches(count)))
    assert [values for _, values in results] == [list(range(b * 3, b * 3 + 3)) for b in range(count)]
    return {pid for pid, _ in results}


@pytest.mark.parametrize("size", [0, 1, 2])
def test_results_come_in_batch_order_whichever_process_formats_them(size: int) -> None:
    pool = FormattingPool(size)
    try:
        started(pool)
        where = formatted_in_order(pool, 12)
    finally:
        pool.shutdown()
    if size == 0:
        assert where == {os.getpid()}
    else:
        # Processes took batches, and this thread formatted some while they were busy.
        assert len(where - {os.getpid()}) >= 1
        assert len(where) <= size + 1


def test_until_its_processes_have_started_a_pool_formats_in_this_thread_without_waiting_for_them() -> None:
    pool = FormattingPool(1)
    try:
        results = pool.ordered(functools.partial(tagged, 0), batches(3))
        # Starting a process takes far longer than formatting these batches: no batch is queued behind it.
        assert {pid for pid, _ in results} == {os.getpid()}
        assert started(pool) is not None
        assert formatted_in_order(pool, 6) - {os.getpid()}
    finally:
        pool.shutdown()


def test_a_process_that_dies_fails_the_export_with_a_code_and_the_next_export_gets_a_new_pool() -> None:
    pool = FormattingPool(1)
    try:
        first = started(pool)
        with pytest.raises(Unavailable) as failed:
            list(pool.ordered(functools.partial(dies, os.getpid()), batches(4)))
        assert failed.value.code == "export_process_failed"
        again = started(pool)
        assert again is not None and again is not first
        assert formatted_in_order(pool, 6) - {os.getpid()}
    finally:
        pool.shutdown()


def test_stopping_early_cancels_what_is_queued() -> None:
    pool = FormattingPool(1)
    try:
        started(pool)
        results = pool.ordered(functools.partial(tagged, 0.05), batches(50))
        assert next(results)[1] == [0, 1, 2]
        closing = time.monotonic()
        results.close()  # what a client that disconnects does to the archive's iterator
        assert time.monotonic() - closing < 1
    finally:
        pool.shutdown()


@given(st.lists(st.one_of(st.lists(st.text(), max_size=4), st.lists(st.one_of(st.none(), st.integers(), st.text()),
                                                                  max_size=4)), max_size=4))
def test_columns_reach_a_process_unchanged(columns: list[list[Any]]) -> None:
    received = pickle.loads(pickle.dumps(ColumnBatch(tuple(c) for c in columns)))
    assert [list(c) for c in received] == columns


def declines(parent: int, rows: Sequence[tuple[Any, ...]]) -> tuple[int, list[int]] | None:
    """A job no formatting process can do (as one that cannot reach the database): None there."""
    return tagged(0.01, rows) if os.getpid() == parent else None


def test_a_batch_a_process_declines_is_done_here_in_order() -> None:
    pool = FormattingPool(1)
    here: list[int] = []

    def locally(rows: Sequence[tuple[Any, ...]]) -> tuple[int, list[int]]:
        here.append(rows[0][0])
        return tagged(0, rows)

    try:
        started(pool)
        results = list(pool.ordered(functools.partial(declines, os.getpid()), batches(8), locally))
    finally:
        pool.shutdown()
    assert [values for _, values in results] == [list(range(b * 3, b * 3 + 3)) for b in range(8)]
    assert {pid for pid, _ in results} == {os.getpid()}
    assert sorted(here) == [b * 3 for b in range(8)]  # every batch, the declined ones after their process said so


def test_other_batches_reach_a_process_unchanged() -> None:
    pool = FormattingPool(1)
    try:
        started(pool)
        assert list(pool.ordered(str.upper, ["00000003-0000001B-1,abc"])) == ["00000003-0000001B-1,ABC"]
    finally:
        pool.shutdown()


def children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children() if child.pid is not None}


def ended(pids: set[int], within: float = 30) -> bool:
    """Wait until none of `pids` is a running child of this process."""
    deadline = time.monotonic() + within
    while pids & children():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_idle_processes_end_and_the_next_export_starts_them_again() -> None:
    pool = FormattingPool(1, idle_seconds=0.3)
    try:
        started(pool)
        first = formatted_in_order(pool, 8) - {os.getpid()}
        assert first and first <= children()
        assert ended(first)  # their memory (and PostgreSQL connection) freed once idle
        started(pool)
        again = formatted_in_order(pool, 8) - {os.getpid()}
        assert again and not again & first
    finally:
        pool.shutdown()


def test_processes_started_for_no_export_end_once_idle() -> None:
    pool = FormattingPool(1, idle_seconds=0.3)
    try:
        before = children()
        started(pool)
        its = children() - before
        assert its
        assert ended(its)
    finally:
        pool.shutdown()


def test_processes_do_not_retire_while_an_export_pauses_longer_than_the_idle_time() -> None:
    pool = FormattingPool(1, idle_seconds=0.2)
    try:
        started(pool)
        results = pool.ordered(functools.partial(tagged, 0.01), batches(12))
        head = [next(results) for _ in range(3)]
        time.sleep(1)  # a slow client: five idle times with the export still open
        rest = list(results)
    finally:
        pool.shutdown()
    assert [values for _, values in head + rest] == [list(range(b * 3, b * 3 + 3)) for b in range(12)]
    assert len({pid for pid, _ in head + rest} - {os.getpid()}) == 1
