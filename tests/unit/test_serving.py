"""ConnectionShare: which worker process should accept the next connection."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from valdrix.serving import ConnectionShare


def share(index: int, counts: list[int], stamps: list[float], open_connections: int) -> ConnectionShare:
    mine = ConnectionShare(counts, stamps, index)
    state: Any = SimpleNamespace(connections=set(range(open_connections)))
    mine.states.append(state)
    return mine


def test_the_least_loaded_worker_accepts_and_publishes_its_count() -> None:
    now = time.monotonic()
    counts, stamps = [0, 3, 2], [0.0, now, now]
    assert share(0, counts, stamps, open_connections=2).least_loaded()  # ties accept too
    assert counts[0] == 2 and stamps[0] >= now
    assert not share(0, counts, stamps, open_connections=3).least_loaded()  # worker 2 has fewer


def test_connections_being_attached_count() -> None:
    now = time.monotonic()
    mine = share(0, [0, 1], [0.0, now], open_connections=1)
    assert mine.least_loaded()
    mine.pending = 1  # a TLS handshake in progress
    assert not mine.least_loaded()
    assert mine.counts[0] == 2


def test_a_worker_that_stopped_writing_its_slot_is_ignored() -> None:
    now = time.monotonic()
    # Worker 1 died with no connections: its count would otherwise make every other worker yield forever.
    counts, stamps = [0, 0], [0.0, now - 2 * ConnectionShare.STALE_SECONDS]
    assert share(0, counts, stamps, open_connections=5).least_loaded()
    stamps[1] = now
    assert not share(0, counts, stamps, open_connections=5).least_loaded()
