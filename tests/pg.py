"""A throwaway PostgreSQL cluster started from the machine's binaries (initdb/pg_ctl)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL binary {name!r} not found; install postgresql")


def _as_owner(cmd: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root: run them as the postgres OS user then.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Cluster:
    """A running throwaway cluster: its URL, and stop/start for fault injection (it keeps its port)."""

    url: str
    data: Path
    port: int
    opts: str
    log: Path

    def start(self) -> None:
        subprocess.run(_as_owner([_bin("pg_ctl"), "-D", str(self.data), "-o", self.opts, "-l", str(self.log), "-w",
                                  "start"]), check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` is a crash as far as clients and recovery are concerned."""
        subprocess.run(_as_owner([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                       capture_output=True)


@contextmanager
def running_cluster(max_connections: int = 300, *, durable: bool = False,
                    crash_safe: bool = False) -> Iterator[Cluster]:
    """Start a private cluster on a free loopback port; yield it; stop and delete it after.

    Tests run without flushing to disk. `durable` keeps PostgreSQL's defaults (fsync, synchronous_commit and
    full_page_writes on), as the reference implementation was measured: benchmarks compared with it use it.
    `crash_safe` keeps synchronous_commit on, so a crashed (not merely stopped) server loses no acknowledged
    commit; fsync stays off, as the host itself does not crash in the fault-injection suite.
    """
    root = Path(tempfile.mkdtemp(prefix="valdrix-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_owner([_bin("initdb"), "-D", str(data), "-U", "valdrix", "--auth=trust", "-E", "UTF8",
                              "--no-sync"]), check=True, capture_output=True)
    opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
            f"-c max_connections={max_connections} -c shared_buffers=256MB")
    if not durable:
        opts += " -c fsync=off -c full_page_writes=off" + ("" if crash_safe else " -c synchronous_commit=off")
    cluster = Cluster(url=f"postgresql+psycopg://valdrix@127.0.0.1:{port}", data=data, port=port, opts=opts,
                      log=root / "log")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_cluster(max_connections: int = 300, *, durable: bool = False) -> Iterator[str]:
    """Start a private cluster (see `running_cluster`); yield its base URL."""
    with running_cluster(max_connections, durable=durable) as cluster:
        yield cluster.url


def create_database(base_url: str, name: str) -> str:
    """Create database `name` on the cluster and return its URL."""
    import psycopg

    with psycopg.connect(base_url.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
