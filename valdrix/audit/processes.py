"""Formatting processes: an export's batches formatted on the host's other cores, in order.

Formatting a batch — canonical JSON, cells, records, lineage entries — is pure Python, so the threads of one
process take turns on the interpreter lock and an export would use one core however many the host has. A
`FormattingPool` keeps up to `size` processes (started with `spawn` on first use, so no thread's locks are
inherited, and kept for the next export until the pool has been idle for `IDLE_SECONDS`, when they end and free
their memory and database connections) and hands each a batch while the request's thread reads the next;
the request's thread formats a batch itself whenever every process is busy or not yet started (starting one
takes most of a second, which the first export would otherwise wait out), so no core idles, and results are
taken in batch order, so the archive's bytes and lineages are the same as formatting everything in-process
(size 0, `VALDRIX_EXPORT_PROCESSES=0`). On SQLite a batch travels column by column as the values the database
returned, each column of strings joined into one text (pickled as one copy, not value by value). On PostgreSQL
only its keys travel, and the process reads the rows from the export's snapshot through a connection of its
own (`read_batch`), so the server process neither decodes nor sends them; a process that cannot read (no
connection to be had) hands the batch back to the request's thread. Each process keeps one `Formatter` per
stream and dialect.

A process that dies fails the export that used it (`export_process_failed`: a 503 for parity, a failed
download for an archive already streaming) and the pool starts afresh for the next one. Processes end with the
server (`shutdown`), and within a second on their own when it is killed.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from valdrix.audit.manifest import LineagePart
from valdrix.audit.snapshots import Shared, joined
from valdrix.audit.streams import formatter
from valdrix.errors import Unavailable

R = TypeVar("R")
B = TypeVar("B")
Columns = Sequence[Sequence[Any]]
# Batches given to each process at a time: with one queued behind the one it formats, a process never waits
# for the request's thread, which then formats a batch itself only when every process has its fill.
_QUEUED = 2
# How soon a formatting process notices that the server process is gone.
_WATCH_SECONDS = 1.0
# Batches formatted and not yet taken, beyond one per process: room for the request's thread to go on while
# the oldest batch is still in a process (such as the first, while the process starts).
_AHEAD = 1
# A pool with no export running for this long ends its processes: each holds about 80 MiB and, on PostgreSQL, a
# database connection, which a server that exports once a day should not keep. The next export starts them
# again, formatting in the request's thread until they answer.
IDLE_SECONDS = 300.0


class _Running(NamedTuple):
    """A pool's processes and the future done once one of them has started."""

    executor: ProcessPoolExecutor
    started: Future[None]


class FormattingPool:
    """Up to `size` formatting processes for exports, ended after `idle_seconds` without one; size 0 formats in the
    request's thread only."""

    def __init__(self, size: int, idle_seconds: float = IDLE_SECONDS) -> None:
        self.size = size
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._running: _Running | None = None
        self._exports = 0  # exports using the processes now
        self._retiring: threading.Timer | None = None

    def start(self) -> Future[None] | None:
        """Start the processes unless they run; return what is done once they answer (None for size 0)."""
        running = self._start()
        return running.started if running else None

    def _start(self) -> _Running | None:
        if self.size == 0:
            return None
        with self._lock:
            if self._running is not None:
                return self._running
            executor = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_follow_parent, initargs=(os.getpid(),))
            running = self._running = _Running(executor, executor.submit(_answer))
        # Idle from when they answer unless an export uses them by then (not under the lock: a future already done
        # calls back at once).
        running.started.add_done_callback(lambda _: self._rearm())
        return running

    def _rearm(self, exports: int = 0) -> None:
        """Count `exports` in (or out, negative) and cancel the idle timer; start a new one if processes run and no
        export does."""
        with self._lock:
            self._exports += exports
            if self._retiring is not None:
                self._retiring.cancel()
                self._retiring = None
            if self._running is None or self._exports:
                return
            timer = self._retiring = threading.Timer(self._idle_seconds, self._retire, (self._running,))
            timer.daemon = True
        timer.start()  # not under the lock: starting a thread waits for it

    def _retire(self, running: _Running) -> None:
        with self._lock:
            # Only the latest timer ends the processes: an export begun since it was armed cancelled it.
            if self._retiring is not threading.current_thread() or self._running is not running:
                return
            self._running = self._retiring = None
        running.executor.shutdown(wait=False, cancel_futures=True)

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._running is not None and self._running.executor is broken:
                self._running = None
        broken.shutdown(wait=False, cancel_futures=True)

    def ordered(self, job: Callable[[B], R | None], batches: Iterable[B],
                here: Callable[[B], R] | None = None) -> Iterator[R]:
        """Yield the result of each batch, in order: `job(batch)` in a process when one is free, else `here(batch)`
        in this thread (`here` defaults to `job`, which must then never return None).

        `job` must be picklable (a module-level function or a partial of one) and depend only on its batch, and
        the batches must be picklable (rows column by column travel best as a `ColumnBatch`). A job returns None
        when it cannot do its batch in a process (see `read_batch`); the batch is then done here.
        """
        local = here or cast(Callable[[B], R], job)
        pending: deque[tuple[Future[R | None], B]] = deque()
        running = None
        self._rearm(+1)  # the processes do not retire while this export runs
        try:
            running = self._start()
            for batch in batches:
                # Until the processes answer (`spawn` takes most of a second), this thread does every batch: a
                # batch queued behind their start would hold up every result after it.
                if (running is not None and running.started.done()
                        and sum(not f.done() for f, _ in pending) < self.size * _QUEUED):
                    pending.append((running.executor.submit(job, batch), batch))
                else:
                    done: Future[R | None] = Future()
                    done.set_result(local(batch))
                    pending.append((done, batch))
                while pending and (pending[0][0].done() or len(pending) > self.size * _QUEUED + _AHEAD):
                    yield self._result(pending.popleft(), local)
            while pending:
                yield self._result(pending.popleft(), local)
        except BrokenProcessPool as exc:
            if running is not None:
                self._discard(running.executor)
            raise Unavailable("an export formatting process ended unexpectedly; retry the export",
                              code="export_process_failed") from exc
        finally:
            for future, _ in pending:
                future.cancel()
            self._rearm(-1)

    @staticmethod
    def _result(item: tuple[Future[R | None], B], here: Callable[[B], R]) -> R:
        future, batch = item
        result = future.result()
        return here(batch) if result is None else result

    def shutdown(self) -> None:
        """Stop the processes (the server is stopping)."""
        with self._lock:
            running, self._running = self._running, None
        self._rearm()
        if running is not None:
            running.executor.shutdown(wait=True, cancel_futures=True)


# Separates a text column's values on their way to a process: one long string pickles as one copy, where a
# column of short strings pickles value by value (measured: most of the cost of sending a batch).
_SEPARATOR = "\x00"


class ColumnBatch(list[Sequence[Any]]):
    """A batch of rows given column by column, as the database driver returned the values. Pickled (on its way
    to a formatting process) with each column of strings that hold no separator joined into one text."""

    def __reduce__(self) -> tuple[Callable[[list[str | Sequence[Any]]], ColumnBatch], tuple[Any, ...]]:
        packed: list[str | Sequence[Any]] = []
        for column in self:
            try:
                joined = _SEPARATOR.join(column)
            except TypeError:  # NULLs or numbers: sent value by value
                packed.append(column)
                continue
            packed.append(joined if column and joined.count(_SEPARATOR) == len(column) - 1 else column)
        return _unpacked, (packed,)


def _unpacked(packed: list[str | Sequence[Any]]) -> ColumnBatch:
    """Return the batch `ColumnBatch.__reduce__` sent (a column is a sequence, so a text is a joined one)."""
    return ColumnBatch(column.split(_SEPARATOR) if isinstance(column, str) else column for column in packed)


def _answer() -> None:
    """The first job of a new pool: done once a process has started."""


def _follow_parent(parent: int) -> None:
    """Make this formatting process end when the server process does, even killed: the call queue cannot tell
    (each process holds both ends of its pipe), so a thread watches the parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="valdrix-export-parent", daemon=True).start()


class Formatted(NamedTuple):
    """A batch of one stream formatted: its CSV bytes, its lineage (decisions.csv only) and its number of rows."""

    data: bytes
    lineage: LineagePart | None
    rows: int


def format_batch(file: str, dialect: str, columns: Columns) -> Formatted:
    """Return a batch of stream `file` on `dialect`, given column by column as read, formatted (picklable)."""
    data, lineage = formatter(file, dialect)(columns)
    return Formatted(data, lineage, len(columns[0]) if columns else 0)


def batch_formatter(file: str, dialect: str) -> Callable[[Columns], Formatted]:
    """Return the picklable job formatting batches of stream `file` on `dialect`."""
    return functools.partial(format_batch, file, dialect)


def read_keyed(conn: Connection, file: str, keys: str) -> Formatted:
    """Return the rows of stream `file` whose keys `keys` lists (`TableStream.keys`, joined by commas), read on
    `conn` (in the export's snapshot, PostgreSQL), formatted."""
    query = formatter(file, "postgresql").query.keyed
    assert query is not None
    rows = query.run_on(conn, {"keys": keys})
    return format_batch(file, "postgresql", list(zip(*rows, strict=True)))


def read_batch(shared: Shared, file: str, keys: str) -> Formatted | None:
    """`read_keyed` in a formatting process, through its own connection to the export's snapshot (picklable); None
    when it cannot read there (no connection to be had, say), so the server process reads the batch itself."""
    try:
        with joined(shared) as conn:
            return read_keyed(conn, file, keys)
    except DBAPIError:
        return None
