"""Serving the app: plain HTTP and/or HTTPS listeners in every worker, certificate rotation, client certificates.

`valdrix serve` binds the sockets once, then each worker process runs one event loop with a uvicorn server
per listener (HTTP on VALDRIX_PORT, HTTPS on VALDRIX_TLS_PORT when a certificate is configured).

Rotation: every TLS handshake checks the certificate, key and client-CA files' mtime/size (a `stat`, a few
microseconds); when they changed, a new SSLContext is built and the handshake switches to it, so a rotated
certificate (cert-manager, a re-mounted Secret) is served from the next connection on, without a restart.
A half-written pair that fails to load is logged and the previous certificate keeps being served.

Balanced accept: the worker processes share each listening socket, and left to the kernel one worker often
takes most connections of a burst (seen: 6 of 8 keep-alive connections). Every request on those connections
then queues on that worker's one core while the other idles; at 8 concurrent callers the p95 latency of a 6/2
split was three times that of a 4/4 one. So each worker accepts itself (`BalancedAcceptor`) and publishes its
open connections in memory shared by the workers: a worker with more connections than another leaves a new
connection to the less loaded one for a few milliseconds before taking it itself.

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
import time
from collections.abc import Callable, Coroutine, MutableSequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from anyio import to_thread
from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send

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

    Built from public interfaces only: a protocol wrapper that delegates every `asyncio.Protocol` call to
    uvicorn's protocol and notes the connection's certificate (from the transport) under its peer address,
    and an ASGI wrapper that finds it again by `scope["client"]`, that same address.
    """

    def __init__(self) -> None:
        self._by_peer: dict[tuple[Any, ...], dict[str, Any]] = {}

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _NotingProtocol(inner, self._by_peer)

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


class ConnectionShare:
    """The open connections of every worker process, in shared memory: slot `index` is this process's.

    Each slot holds a count and when it was last written (CLOCK_MONOTONIC, the same in every process). A
    worker writes its slot on every accept and every 0.1 s; a slot older than STALE_SECONDS belongs to a
    worker that is gone or hung, and is ignored.
    """

    STALE_SECONDS = 1.0

    def __init__(self, counts: MutableSequence[int], stamps: MutableSequence[float], index: int) -> None:
        self.counts, self.stamps, self.index = counts, stamps, index
        self.states: list[uvicorn.server.ServerState] = []
        self.pending = 0  # accepted, protocol not yet attached (a TLS handshake in progress)

    def publish(self) -> int:
        """Return this process's open connections, after writing them to its slot."""
        mine = self.pending + sum(len(state.connections) for state in self.states)
        self.counts[self.index] = mine
        self.stamps[self.index] = time.monotonic()
        return mine

    def least_loaded(self) -> bool:
        """Return whether no live worker has fewer open connections than this one."""
        mine = self.publish()
        fresh_since = self.stamps[self.index] - self.STALE_SECONDS
        return all(mine <= count for i, (count, stamp) in enumerate(zip(self.counts, self.stamps, strict=True))
                   if i != self.index and stamp >= fresh_since)


class BalancedAcceptor:
    """Accepts connections from a listening socket shared with the other worker processes, evenly."""

    # A worker with more connections than another leaves a new connection to the other for up to YIELDS pauses
    # of YIELD_SECONDS (the other's event loop may be waiting for the GIL, up to 5 ms at a time).
    YIELD_SECONDS = 0.005
    YIELDS = 4
    # After a failed accept (out of file descriptors or memory) accepting pauses this long, as asyncio's does.
    RETRY_SECONDS = 1.0

    def __init__(self, sock: socket.socket, share: ConnectionShare, protocol: Callable[[], asyncio.Protocol],
                 ssl_context: ssl.SSLContext | None) -> None:
        self.sock, self.share, self.protocol, self.ssl_context = sock, share, protocol, ssl_context
        self.loop = asyncio.get_running_loop()
        self._yield_ended_at: float | None = None
        self._yields = 0
        self._resume: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def stop(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        if self._resume is not None:
            self._resume.cancel()

    def _pause(self, seconds: float, then: Callable[[], None]) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self._resume = self.loop.call_later(seconds, then)

    def _after_yield(self) -> None:
        self._yield_ended_at = time.monotonic()
        self.start()

    def _on_readable(self) -> None:
        # Readable at once when a pause ends: the connection no other worker took. Anything later is new.
        still_pending = self._yield_ended_at is not None and time.monotonic() - self._yield_ended_at < 0.001
        self._yield_ended_at = None
        if not still_pending:
            self._yields = 0
        if self._yields < self.YIELDS and not self.share.least_loaded():
            self._yields += 1
            self._pause(self.YIELD_SECONDS, self._after_yield)
            return
        self._yields = 0
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client left
        except OSError as exc:  # out of file descriptors or memory: retrying at once would spin
            log.error("cannot accept connections (%s); retrying in %.0f s", exc, self.RETRY_SECONDS)
            self._pause(self.RETRY_SECONDS, self.start)
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.share.pending += 1
        self.share.publish()
        task = self.loop.create_task(self._attach(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn, ssl=self.ssl_context)
        except OSError as exc:  # a failed TLS handshake (SSLError) or a reset: that client's problem
            log.debug("connection dropped before its first request: %s", exc)
            conn.close()
        finally:
            self.share.pending -= 1
            self.share.publish()


class _Listener(uvicorn.Server):
    """One listening socket served by uvicorn's HTTP protocol, accepting through a `BalancedAcceptor`."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, share: ConnectionShare,
                 certificates: ClientCertificates | None = None) -> None:
        super().__init__(config)
        self.sock, self.share, self.certificates = sock, share, certificates
        self.acceptor: BalancedAcceptor | None = None

    # One process runs several servers: signals are handled once, for all of them, by `serve_sockets`.
    @contextmanager
    def capture_signals(self) -> Any:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # uvicorn's start-up without its own accepting

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
                config=self.config, server_state=self.server_state, app_state=self.lifespan.state)
            return self.certificates.protocol(made) if self.certificates is not None else made

        self.share.states.append(self.server_state)
        self.acceptor = BalancedAcceptor(self.sock, self.share, protocol, self.config.ssl)
        self.acceptor.start()

    async def on_tick(self, counter: int) -> bool:
        # Every 0.1 s: connections that closed since the last accept show in this worker's slot.
        self.share.publish()
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.acceptor is not None:
            self.acceptor.stop()
        await super().shutdown(sockets=[])


def _config(app: ASGIApp, settings: Settings, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=settings.log_level, access_log=settings.access_log,
                          timeout_graceful_shutdown=10, lifespan="off", **extra)


def tls_settings(settings: Settings) -> ReloadingTLS | None:
    """Return the HTTPS settings when both certificate and key files are configured, else None."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return ReloadingTLS(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


async def serve_sockets(app: ASGIApp, settings: Settings, http: socket.socket | None,
                        https: socket.socket | None, share: ConnectionShare) -> None:
    """Serve `app` on the given listening sockets until SIGINT/SIGTERM or until all servers stop."""
    servers: list[_Listener] = []
    if http is not None:
        servers.append(_Listener(_config(app, settings), http, share))
    tls = tls_settings(settings)
    if https is not None and tls is not None:
        certificates = ClientCertificates()
        servers.append(_Listener(_config(certificates.app(app), settings, ssl_context_factory=lambda _c, _d: tls.base),
                                 https, share, certificates))
    loop = asyncio.get_running_loop()
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

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    # uvloop, as uvicorn itself would choose: a faster event loop for the same asyncio code.
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
    sock.set_inheritable(True)
    return sock


def _worker(http: socket.socket | None, https: socket.socket | None, counts: MutableSequence[int],
            stamps: MutableSequence[float], index: int) -> None:
    from valdrix.app import app_from_env
    from valdrix.config import get_settings

    _run_loop(serve_sockets(app_from_env(), get_settings(), http, https, ConnectionShare(counts, stamps, index)))


def run(settings: Settings, workers: int, app_factory: Callable[[], ASGIApp]) -> None:
    """Bind the configured listeners and serve them from `workers` processes (in this one when 1)."""
    tls = settings.tls_cert_file is not None and settings.tls_key_file is not None
    http = bind(settings.host, settings.port) if settings.tls_serve_http or not tls else None
    https = bind(settings.host, settings.tls_port) if tls else None
    if workers == 1:
        _run_loop(serve_sockets(app_factory(), settings, http, https, ConnectionShare([0], [0.0], 0)))
        return
    spawn = multiprocessing.get_context("spawn")
    # Each slot is written only by its own worker: no lock needed.
    counts, stamps = spawn.RawArray("i", workers), spawn.RawArray("d", workers)
    procs = [spawn.Process(target=_worker, args=(http, https, counts, stamps, index)) for index in range(workers)]
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
