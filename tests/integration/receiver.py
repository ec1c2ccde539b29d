"""A local HTTP endpoint that plays a notification receiver: records what it is sent, fails or hangs on request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.pg import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Paths: `/fail` answers 500; `/hang` blocks until `release` is set; `/slow` waits `slow_seconds`; others 200.

    `overlaps` counts requests that arrived for a `webhook-id` still being answered (a double delivery at once).
    """

    url: str
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    slow_seconds: float = 0.05
    overlaps: int = 0
    _in_flight: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.on(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.on(path))} of {count} requests within {timeout} s")


@contextmanager
def receiver() -> Iterator[Receiver]:
    port = free_port()
    box = Receiver(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            event_id = self.headers.get("webhook-id") or ""
            with box._lock:
                if event_id and event_id in box._in_flight:
                    box.overlaps += 1
                box._in_flight.add(event_id)
                box.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            try:
                if self.path == "/hang":
                    box.release.wait(30)
                elif self.path == "/slow":
                    time.sleep(box.slow_seconds)
                status = 500 if self.path == "/fail" else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender went away (killed mid-delivery)
            finally:
                with box._lock:
                    box._in_flight.discard(event_id)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        box.release.set()
        server.shutdown()
        server.server_close()
