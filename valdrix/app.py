"""The application factory: routers, problem-document errors, request guards, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from valdrix import __version__, openapi
from valdrix.admission.router import router as admission_router
from valdrix.admission.service import AdmissionGate
from valdrix.approvals.metrics import QueueBacklogCollector
from valdrix.approvals.router import jwks_router
from valdrix.approvals.router import router as approvals_router
from valdrix.approvals.tokens import KeyRing
from valdrix.audit.processes import FormattingPool
from valdrix.audit.router import router as audit_router
from valdrix.auth.service import KeyOwners
from valdrix.budgets.metrics import BudgetCollector
from valdrix.budgets.router import router as budgets_router
from valdrix.clock import Clock, IdFactory, SystemClock, UuidFactory
from valdrix.config import Settings, get_settings
from valdrix.console.router import STATIC as CONSOLE_STATIC
from valdrix.console.router import router as console_router
from valdrix.costs.router import router as costs_router
from valdrix.db import READ_SNAPSHOT, make_engine, make_sessionmaker
from valdrix.decisions.router import router as decisions_router
from valdrix.decisions.service import ModeMemory
from valdrix.errors import PROBLEM_MEDIA_TYPE, ValdrixError, problem_body
from valdrix.gatepool import GatePool
from valdrix.integrations.router import router as integrations_router
from valdrix.jsonio import MAX_JSON_DEPTH, JSONResponse, json_depth_exceeds
from valdrix.ledger.router import router as ledger_router
from valdrix.migrate import head_revision
from valdrix.notifications.metrics import QueueAgeCollector
from valdrix.notifications.router import router as notifications_router
from valdrix.observability.metrics import BuildInfo, RequestMetrics
from valdrix.policies.router import router as policies_router
from valdrix.preflight.router import router as preflight_router
from valdrix.pricing.kubernetes import PriceBook
from valdrix.reservations.router import router as reservations_router
from valdrix.simulation.router import router as simulation_router
from valdrix_vendor import SWAGGER_UI

log = logging.getLogger("valdrix")

PROBLEM = PROBLEM_MEDIA_TYPE
FORM = "application/x-www-form-urlencoded"
# `\u0000` in JSON text: the escape itself, not an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# Requests are matched against routers in this order: the gate's hot paths come first.
ROUTERS = (preflight_router, admission_router, decisions_router, approvals_router, policies_router, budgets_router,
           ledger_router, jwks_router, audit_router, reservations_router, costs_router, notifications_router,
           console_router, integrations_router, simulation_router)
# Collectors that read the database at scrape time, built per app from its session factory and clock.
SCRAPE_COLLECTORS = (QueueBacklogCollector, QueueAgeCollector)


def problem(status: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    """Return a problem-document response."""
    return JSONResponse(problem_body(status, code, detail.split(":")[0], detail, extra), status_code=status,
                        media_type=PROBLEM, headers=headers)


class RequestGuard:
    """Refuses, before any handler runs: bodies over the size limit (413), non-JSON bodies (415), JSON nested
    deeper than MAX_JSON_DEPTH (400: a parser or validator recursing into it would fail with RecursionError,
    far from the input that caused it), and NUL characters in the path, query or body (400: PostgreSQL text
    cannot hold them, so they would fail at the database on one backend and not the other)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            await self._reject(scope, receive, send, 400, "nul_character", "the request contains a NUL character")
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._reject(scope, receive, send, 413, "payload_too_large",
                               f"request body exceeds {self.max_body_bytes} bytes")
            return
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        # The console's forms post urlencoded bodies; every other route takes JSON.
        form = media == FORM and scope["path"].startswith("/console/")
        if length != "0" and media and media != "application/json" and not media.endswith("+json") and not form:
            await self._reject(scope, receive, send, 415, "unsupported_media_type",
                               "request body must be application/json")
            return
        # The body is bounded by max_body_bytes, so reading it whole here costs no more than the handler would.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                await self._reject(scope, receive, send, 413, "payload_too_large",
                                   f"request body exceeds {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _JSON_NUL.search(body):
            await self._reject(scope, receive, send, 400, "nul_character", "the request contains a NUL character")
            return
        if json_depth_exceeds(body, MAX_JSON_DEPTH):
            await self._reject(scope, receive, send, 400, "json_too_deep",
                               f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels")
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, status: int, code: str, detail: str) -> None:
        await problem(status, code, detail)(scope, receive, send)


def _validation_problem(exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "type": e.get("type"), "msg": e.get("msg")}
              for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(400, "malformed_json", "request body is not valid JSON", errors=errors)
    fields = ", ".join(".".join(e["loc"][1:] if e["loc"][:1] == ["body"] else e["loc"]) or "body" for e in errors)
    return problem(422, "invalid_request", f"invalid request: {fields}", errors=errors)


def _allowed_methods(request: Request) -> set[str]:
    """Return the methods the API documents for the route whose path matched (several routes can share it)."""
    template = getattr(request.scope.get("route"), "path_format", None)
    return {m.upper() for m in request.app.openapi()["paths"].get(template, {})}


def _metrics(scrape: CollectorRegistry) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY as registry
    # Database-backed collectors live in the app's own registry in both modes: process-wide registration
    # would clash when one process builds several apps, and multiprocess files cannot hold them.
    return Response(generate_latest(registry) + generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Started by the first export, if any; joined here so no formatting process outlives the server.
    await asyncio.get_running_loop().run_in_executor(None, app.state.export_pool.shutdown)


def create_app(settings: Settings, *, clock: Clock | None = None, ids: IdFactory | None = None) -> FastAPI:
    """Return the Valdrix Gate ASGI application bound to `settings`; raise PricingError for a bad price book."""
    book = PriceBook.load(settings.k8s_price_book_file)
    # Metrics are Prometheus (below); FastAPI's OpenTelemetry hooks would only add a check to every request.
    # The API explorer is served from vendored assets (docs below), never from a CDN: it works air-gapped.
    app = FastAPI(title="Valdrix Gate", version=__version__, default_response_class=JSONResponse,
                  telemetry={"tracing": False, "metrics": False, "logs": False}, docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name, lifespan=_lifespan)
    engine = make_engine(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_sessionmaker(engine)
    app.state.reads = make_sessionmaker(engine, read_only=True)
    app.state.clock = clock or SystemClock()
    app.state.ids = ids or UuidFactory()
    app.state.head = head_revision()
    # Misconfigured keys stop the start-up; no keys at all leave approval tokens unavailable (503), never
    # silently replaced by an ephemeral key that other replicas could not verify.
    app.state.keyring = KeyRing.from_settings(settings)
    app.state.key_owners = KeyOwners()
    app.state.export_pool = FormattingPool(settings.export_processes)
    if app.state.keyring is None:
        log.warning("no signing keys configured (VALDRIX_SIGNING_KEYS_DIR): approval tokens are unavailable")
    scrape = CollectorRegistry(auto_describe=True)
    for collector in SCRAPE_COLLECTORS:
        scrape.register(collector(app.state.reads, app.state.clock))
    scrape.register(BudgetCollector(app.state.reads, app.state.clock, settings.metrics_budget_scopes))
    scrape.register(BuildInfo("api"))
    app.state.price_book = book
    app.state.modes = ModeMemory()
    app.state.admission = AdmissionGate(settings, book, app.state.sessions, app.state.clock, app.state.ids,
                                        app.state.modes)
    # Every write transaction (gate decisions, and the handlers of routes that write: `WritingRoute`) runs
    # begun-to-committed as one call on this pool; reads run on anyio's threads. SQLite has one writer, so
    # this process's writes take turns on one thread (a queue, no lock); PostgreSQL's row locks let several
    # run (docs/architecture.md, "Threads, locks and transactions").
    app.state.write_executor = (GatePool(1, 1) if settings.is_sqlite
                                else GatePool(settings.worker_threads, settings.gate_concurrency))
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(ValdrixError)
    async def _valdrix_error(_: Request, exc: ValdrixError) -> JSONResponse:
        return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:
            # The router names only the first route matching the path; several routes can share it.
            methods = _allowed_methods(request)
            headers = {"Allow": ", ".join(sorted(methods))} if methods else exc.headers
        return problem(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return problem(503, "database_unavailable", "the database is unavailable; retry later")

    @app.exception_handler(IntegrityError)
    async def _conflicting_write(_: Request, exc: IntegrityError) -> JSONResponse:
        # A concurrent request wrote the same unique record first; nothing of this request was committed.
        log.warning("conflicting concurrent write: %s", exc.orig)
        return problem(409, "conflicting_write", "a concurrent request changed the same record; retry")

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", exc.orig)
        return problem(503, "database_error", "the database refused the operation; retry later")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "internal_error", "internal error")

    app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC), name="console-static")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Valdrix Gate API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png",
                                   swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            with engine.execution_options(**{READ_SNAPSHOT: True}).connect() as conn:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception as exc:  # any failure to reach the database means not ready
            return problem(503, "not_ready", f"database unreachable: {type(exc).__name__}")
        if current != app.state.head:
            return problem(503, "not_ready", f"database at revision {current}, expected {app.state.head}")
        return JSONResponse({"status": "ready", "revision": current})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return _metrics(scrape)

    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    # Outermost: a request the guard refuses is counted too.
    app.add_middleware(RequestMetrics)
    return app


def app_from_env() -> FastAPI:
    """Return the application configured from `VALDRIX_*` (the uvicorn factory for worker processes)."""
    return create_app(get_settings())
