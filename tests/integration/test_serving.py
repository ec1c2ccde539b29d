"""Serving from several worker processes sharing the listening sockets (uvicorn's public `Server.serve`)."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.live import process_servers
from valdrix.migrate import upgrade


def _owners(port: int) -> Counter[int]:
    """Return how many established connections to `port` each process holds (Linux /proc)."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED, server side
                inodes[fields[9]] = True
    owners: Counter[int] = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        owners[int(pid)] += sum(f"socket:[{inode}]" in links for inode in inodes)
    return +owners


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_every_worker_accepts_and_a_killed_worker_leaves_the_others_serving(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/serve.db"
    upgrade(url)
    with process_servers(url, 1, workers=2) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        # The server answers once one worker is up; both take connections from the shared socket.
        deadline, seen = time.monotonic() + 30, set()
        while len(seen) < 2:
            assert time.monotonic() < deadline, f"only {seen} ever accepted a connection"
            seen |= set(_burst(port, 4))
        victim, survivor = sorted(seen)
        os.kill(victim, signal.SIGKILL)
        began = time.monotonic()
        for _ in range(5):  # every connection answered, by the survivor, with no wait for the dead worker
            assert set(_burst(port, 8)) == {survivor}
        assert time.monotonic() - began < 10


def _burst(port: int, size: int) -> Counter[int]:
    """Connect `size` sockets at once (as wrk or a pooled client does), use each, and return who holds them."""
    conns = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(size)]
    try:
        for conn in conns:  # all SYNs out before any worker accepts: the accept queue fills in one go
            conn.setblocking(False)
            conn.connect_ex(("127.0.0.1", port))
        for conn in conns:
            select.select([], [conn], [], 5)
            conn.settimeout(5)  # a connection nobody accepts fails the test instead of hanging it
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for conn in conns:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        return _owners(port)
    finally:
        for conn in conns:
            conn.close()
