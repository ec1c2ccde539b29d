"""How keep-alive connections opened in a burst split over a server's worker processes.

Starts one `valdrix serve --workers W` on a fresh SQLite file, then `--rounds` times opens `--connections`
connections at once (all SYNs out before any worker accepts, as wrk or a pooled client does), sends one request
on each, and counts which worker process holds each connection (Linux /proc). Prints the histogram of the
most loaded worker's share, e.g. `5/3: 18` for 8 connections over 2 workers. Each connection is then used while
open, so a worker holding more of them answers more of the requests of a steady keep-alive load.

With `--stagger S` the connections open one every S seconds instead, each used at once by its own client
sending GET /policies back to back, as a pooled client (the Kubernetes API server, a CI runner's HTTP pool)
opens connections when the ones it has are busy; the split is taken once all are open and busy.

    PYTHONPATH=$PWD .venv/bin/python bench/spread.py [--workers 2] [--connections 8] [--rounds 40] [--stagger 0]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_serving import _burst, _owners  # noqa: E402
from tests.live import make_tenant, process_servers  # noqa: E402
from valdrix.config import Settings  # noqa: E402
from valdrix.migrate import upgrade  # noqa: E402


def staggered(port: int, key: str, connections: int, stagger: float) -> Counter[int]:
    """Open `connections` busy keep-alive connections one every `stagger` s; return who holds them."""
    request = (f"GET /api/v1/enforcement/policies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
               ).encode()
    stop = threading.Event()

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            reader = conn.makefile("rb")
            while not stop.is_set():
                conn.sendall(request)
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    held = _owners(port)
    stop.set()
    for thread in threads:
        thread.join()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between connections (0: a burst)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="valdrix-spread-") as directory:
        url = f"sqlite:///{directory}/spread.db"
        upgrade(url)
        key = make_tenant(Settings(database_url=url), "").owner_key
        with process_servers(url, 1, workers=args.workers) as [server]:
            port = int(server.rsplit(":", 1)[1])
            seen: set[int] = set()
            deadline = time.monotonic() + 30
            while len(seen) < args.workers and time.monotonic() < deadline:  # every worker is up
                seen |= set(_burst(port, args.workers))
            splits: Counter[str] = Counter()
            for _ in range(args.rounds):
                held = (staggered(port, key, args.connections, args.stagger) if args.stagger
                        else _burst(port, args.connections))
                shares = sorted(held.values(), reverse=True) + [0] * (args.workers - len(held))
                splits["/".join(map(str, shares))] += 1
                time.sleep(0.05)  # the burst's connections are closed before the next one
    even = sum(n for split, n in splits.items() if max(map(int, split.split("/"))) - min(map(int, split.split("/")))
               <= 1)
    opened = f"one every {args.stagger:g} s, busy" if args.stagger else "at once"
    print(f"{args.connections} connections ({opened}) over {args.workers} workers, {args.rounds} bursts: "
          + ", ".join(f"{split}: {n}" for split, n in sorted(splits.items(), reverse=True))
          + f" (even in {even} of {args.rounds})")


if __name__ == "__main__":
    main()
