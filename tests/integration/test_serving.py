"""Serving from several worker processes: keep-alive connections are spread evenly over the workers."""

from __future__ import annotations

import os
import socket
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
def test_keep_alive_connections_spread_evenly_over_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/serve.db"
    upgrade(url)
    with process_servers(url, 1, workers=2) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        for burst in range(3):
            # A client opening its pool at once (wrk, a CI runner's proxy, the API server's webhook client).
            conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
            for conn in conns:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for conn in conns:
                assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            shares = _owners(port)
            for conn in conns:
                conn.close()
            assert sorted(shares.values()) == [6, 6], f"burst {burst}: {shares}"
