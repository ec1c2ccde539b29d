"""How fast this machine runs Python at the moment a figure is taken.

The 2-core VM these benchmarks run on shares its physical CPUs: the same pure-Python loop has taken from
0.9 to 3.9 s within one day. Every figure is printed next to this reference, so figures from different runs
can be compared (a slower reference means every CPU-bound figure of that run is slower too).
"""

from __future__ import annotations

import time

ITERATIONS = 5_000_000


def reference_loop_ms() -> float:
    """Return the CPU milliseconds one fixed pure-Python loop of ITERATIONS additions takes now."""
    started = time.process_time()
    total = 0
    for i in range(ITERATIONS):
        total += i
    return (time.process_time() - started) * 1000
