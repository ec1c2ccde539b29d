"""`valdrix_build_info` and `valdrix_http_requests_total` (route template, never the raw path).

Both are bounded: one build-info sample per process kind, and one HTTP series per (method, route template,
status) — a path that matches no route is counted under the template `unmatched`, so scanners probing
random URLs cannot grow the series count.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from valdrix import __version__

BUILD_INFO = "valdrix_build_info"
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter("valdrix_http_requests_total", "HTTP requests by method, route template and status.",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("valdrix_http_request_duration_seconds",
                          "HTTP request wall time by method and route template.", ["method", "route"],
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))


class BuildInfo(Collector):
    """A constant 1 labelled with the version, the Python version and the process kind (`api`, `worker`)."""

    def __init__(self, component: str) -> None:
        self._labels = [__version__, platform.python_version(), component]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(BUILD_INFO, "Valdrix Gate build: version, Python version and process kind.",
                                   labels=["version", "python_version", "component"])
        family.add_metric(self._labels, 1)
        yield family


def route_template(scope: Scope) -> str:
    """Return the template of the route that served the request (`/x/{id}`), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """ASGI middleware counting every HTTP response by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # an exception escaping the app is answered 500 by the server

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.monotonic() - started)
