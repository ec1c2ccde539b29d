"""Serving the app: plain HTTP and/or HTTPS listeners in every worker, certificate rotation, client certificates.

`valdrix serve` binds the sockets once, then each worker process runs one event loop with a uvicorn server
per listener (HTTP on VALDRIX_PORT, HTTPS on VALDRIX_TLS_PORT when a certificate is configured).

Rotation: every TLS handshake checks the certificate, key and client-CA files' mtime/size (a `stat`, a few
microseconds); when they changed, a new SSLContext is built and the handshake switches to it, so a rotated
certificate (cert-manager, a re-mounted Secret) is served from the next connection on, without a restart.
A half-written pair that fails to load is logged and the previous certificate keeps being served.

Worker processes share each listening socket, as uvicorn's own `--workers` does; docs/architecture.md ("What
the server takes from uvicorn") gives the figures behind this choice.

Client certificates: with VALDRIX_TLS_CLIENT_CA_FILE the HTTPS listener asks for one (CERT_OPTIONAL): a
presented certificate must chain to that CA or the handshake fails, while callers without one (probes,
API-key callers) still connect. The verified leaf is exposed to the app as the ASGI TLS extension
(`scope["extensions"]["tls"]["client_cert_chain"]`, `ClientCertificates`); the plain HTTP listener never sets it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvicorn
from anyio import to_thread
from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from valdrix.config import Settings

log = logging.getLogger("valdrix.serving")


class ReloadingTLS:
    """Server TLS settings that follow the certificate files on disk."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None = None) -> None:
        self.files = tuple(p for p in (cert_file, key_file, client_ca_file) if p is not None)
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._stamp = self._stat()
        self.base = self._build()
        self.base.sni_callback = self._on_handshake
        self.current = self.base

    def _stat(self) -> tuple[tuple[int, int], ...]:
        return tuple((s.st_mtime_ns, s.st_size) for s in (p.stat() for p in self.files))

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def refresh(self) -> None:
        """Switch to the files' current certificate if they changed and load cleanly; keep the old one if not."""
        try:
            stamp = self._stat()
        except OSError as exc:
            log.warning("TLS files unreadable, keeping the current certificate: %s", exc)
            return
        if stamp == self._stamp:
            return
        try:
            fresh = self._build()
        except (OSError, ssl.SSLError) as exc:
            log.warning("rotated TLS files do not load (yet), keeping the current certificate: %s", exc)
            return
        self.current, self._stamp = fresh, stamp
        log.info("TLS certificate reloaded from %s", self.cert_file)

    def _on_handshake(self, conn: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None,
                      _ctx: ssl.SSLContext) -> None:
        self.refresh()
        if conn.context is not self.current:
            conn.context = self.current


class ClientCertificates:
    """The verified client certificate of each open connection of one HTTPS listener, given to the app as the
    ASGI TLS extension.

    Built on uvicorn's public `Config(http=...)`, which takes an `asyncio.Protocol` class: ours builds the
    protocol `--http auto` names from the arguments uvicorn gives it, unchanged, delegates every
    `asyncio.Protocol` call to it and notes the connection's certificate (from the transport) under its peer
    address; an ASGI wrapper finds it again by `scope["client"]`, that same address.
    """

    def __init__(self) -> None:
        self._by_peer: dict[tuple[Any, ...], dict[str, Any]] = {}

    def protocol_class(self) -> type[asyncio.Protocol]:
        inner: Callable[..., asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["auto"])
        by_peer = self._by_peer

        class Noting(_NotingProtocol):
            def __init__(self, **uvicorn_arguments: Any) -> None:
                super().__init__(inner(**uvicorn_arguments), by_peer)

        return Noting

    def app(self, app: ASGIApp) -> ASGIApp:
        async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
            tls = self._by_peer.get(tuple((scope.get("client") or ())[:2])) if scope["type"] == "http" else None
            if tls is not None:
                scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
            await app(scope, receive, send)

        return with_tls


class _NotingProtocol(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, by_peer: dict[tuple[Any, ...], dict[str, Any]]) -> None:
        self.inner, self.by_peer = inner, by_peer
        self.peer: tuple[Any, ...] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer, ssl_object = transport.get_extra_info("peername"), transport.get_extra_info("ssl_object")
        if peer is not None and ssl_object is not None:
            self.peer = tuple(peer[:2])
            der = ssl_object.getpeercert(binary_form=True)
            self.by_peer[self.peer] = {
                "server_cert": None, "client_cert_error": None, "tls_version": None, "cipher_suite": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                "client_cert_name": x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None}
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.by_peer.pop(self.peer, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _config(app: ASGIApp, settings: Settings, *, lifespan: bool, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=settings.log_level, access_log=settings.access_log,
                          timeout_graceful_shutdown=10, lifespan="on" if lifespan else "off", **extra)


def tls_settings(settings: Settings) -> ReloadingTLS | None:
    """Return the HTTPS settings when both certificate and key files are configured, else None."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return ReloadingTLS(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


async def serve_sockets(app: ASGIApp, settings: Settings, http: socket.socket | None,
                        https: socket.socket | None) -> None:
    """Serve `app` on the given listening sockets until SIGINT/SIGTERM or until any of the servers stops."""
    servers: list[tuple[uvicorn.Server, socket.socket]] = []
    # The listeners share one application, whose lifespan (start-up, and the shutdown that stops its export
    # formatting processes) runs once per process: in the first server.
    if http is not None:
        servers.append((uvicorn.Server(_config(app, settings, lifespan=True)), http))
    tls = tls_settings(settings)
    if https is not None and tls is not None:
        certificates = ClientCertificates()
        config = _config(certificates.app(app), settings, lifespan=not servers, http=certificates.protocol_class(),
                         ssl_context_factory=lambda _c, _d: tls.base)
        servers.append((uvicorn.Server(config), https))
    # Everything built so far (modules, app, mappers, compiled statements) lives as long as the process: moved
    # out of the collector's generations, a full collection no longer walks it and stalls every request
    # in flight for tens of milliseconds. A request's objects die with it (reference counting), so young
    # collections can be far rarer than the default every 700 allocations (measured: p50 of a priced
    # admission decision 4.1 → 3.3 ms at 200/s).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)
    # Blocking handlers (database work) run on this many threads per process. More threads than the database
    # work can use only adds GIL contention: excess requests wait in the event loop instead.
    to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads

    def stop_all(_signal: int = 0, _frame: object = None) -> None:
        for server, _ in servers:
            server.should_exit = True

    # Each uvicorn server handles SIGINT/SIGTERM while it serves, and on stopping restores the handler it found
    # and raises the signal again: this one, so the signal stops every server of the process and then ends in
    # a normal return (not the default action, which would end the process before its clean-up).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_all)

    async def serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            stop_all()

    await asyncio.gather(*(serve(server, sock) for server, sock in servers))


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    # uvloop, as uvicorn itself would choose: a faster event loop for the same asyncio code. The server extra
    # installs it only where it exists (not on Windows); elsewhere the standard loop runs the same code.
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main)


def bind(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket (shared by every worker process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for such listeners, and
    # without it Nagle's algorithm holds a response's body behind the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _worker(http: socket.socket | None, https: socket.socket | None) -> None:
    from valdrix.app import app_from_env
    from valdrix.config import get_settings

    _run_loop(serve_sockets(app_from_env(), get_settings(), http, https))


def run(settings: Settings, workers: int, app_factory: Callable[[], ASGIApp]) -> None:
    """Bind the configured listeners and serve them from `workers` processes (in this one when 1)."""
    tls = settings.tls_cert_file is not None and settings.tls_key_file is not None
    http = bind(settings.host, settings.port) if settings.tls_serve_http or not tls else None
    https = bind(settings.host, settings.tls_port) if tls else None
    if workers == 1:
        _run_loop(serve_sockets(app_factory(), settings, http, https))
        return
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_worker, args=(http, https)) for _ in range(workers)]
    for proc in procs:
        proc.start()

    def forward(sig: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
