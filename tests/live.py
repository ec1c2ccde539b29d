"""Live servers for integration tests: the real app behind real HTTP, in a thread or in processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.pg import free_port
from valdrix.app import create_app
from valdrix.auth import service as auth
from valdrix.clock import OffsetClock, SystemClock
from valdrix.config import Settings
from valdrix.db import make_engine, make_sessionmaker, transaction


@dataclass(frozen=True)
class SigningKeys:
    """The test key directory: `active_kid` signs; `retired_kid` is listed public-only."""

    directory: Path
    active_kid: str
    retired_kid: str
    retired_private_pem: bytes

    def settings(self) -> dict[str, Any]:
        return {"signing_keys_dir": self.directory, "signing_active_kid": self.active_kid}

    def env(self) -> dict[str, str]:
        return {"VALDRIX_SIGNING_KEYS_DIR": str(self.directory), "VALDRIX_SIGNING_ACTIVE_KID": self.active_kid}


@dataclass
class LiveServer:
    url: str
    settings: Settings
    clock: OffsetClock
    backend: str

    def tenant(self, *, name: str | None = None) -> Tenant:
        """Create a fresh tenant with an owner key; every test works in its own tenant."""
        return make_tenant(self.settings, self.url, name=name)


@dataclass
class Tenant:
    id: uuid.UUID
    name: str
    url: str
    settings: Settings
    owner_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.owner_key}"},
                            timeout=30)

    def key(self, name: str, *, role: str = "member", permissions: list[str] | None = None) -> str:
        """Create a principal with `role` and return a fresh key for it."""
        engine = make_engine(self.settings)
        try:
            with transaction(make_sessionmaker(engine)) as session:
                principal = auth.ensure_principal(session, self.id, name, role=role, permissions=permissions or [],
                                                  now=SystemClock().now())
                return auth.issue_key(session, principal, now=SystemClock().now())[1]
        finally:
            engine.dispose()


def make_tenant(settings: Settings, url: str, *, name: str | None = None) -> Tenant:
    engine = make_engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            now = SystemClock().now()
            tenant = auth.create_tenant(session, name or f"t-{uuid.uuid4().hex[:12]}", now=now)
            owner = auth.ensure_principal(session, tenant.id, "owner", role="owner",
                                          permissions=list(auth.PERMISSIONS), now=now)
            key = auth.issue_key(session, owner, now=now)[1]
            return Tenant(id=tenant.id, name=tenant.name, url=url, settings=settings, owner_key=key)
    finally:
        engine.dispose()


@contextmanager
def thread_server(settings: Settings, backend: str) -> Iterator[LiveServer]:
    """Serve the app from a thread on a free port with an adjustable clock."""
    clock = OffsetClock()
    port = free_port()
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url)
    try:
        yield LiveServer(url=url, settings=settings, clock=clock, backend=backend)
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.engine.dispose()


def _wait_ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server at {url} did not start")
        time.sleep(0.05)


@contextmanager
def process_servers(database_url: str, count: int, *, workers: int = 1,
                    env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """Start `count` separate `valdrix serve` processes on one database; yield their URLs."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            proc_env = {**os.environ, "VALDRIX_DATABASE_URL": database_url, "VALDRIX_PORT": str(port),
                        "VALDRIX_WORKERS": str(workers), **(env or {})}
            log = open(f"{tempfile.gettempdir()}/valdrix-server-{port}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=proc_env,
                                          stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            _wait_ready(url)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def post(client: httpx.Client, path: str, body: Any, **kw: Any) -> httpx.Response:
    return client.post("/api/v1/enforcement" + path, json=body, **kw)
