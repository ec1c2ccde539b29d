"""Cost of the HTTP request metrics middleware (valdrix/observability/metrics.py) per request.

Drives a trivial ASGI app directly and through `RequestMetrics`, interleaved in the same run, and prints the
median per-request time of each and the difference. Run: .venv/bin/python bench/request_metrics.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from valdrix.observability.metrics import RequestMetrics

ROUNDS, PER_ROUND = 15, 2000


class _Route:
    path = "/api/v1/enforcement/decisions/{decision_id}"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b""}


async def _send(_: Message) -> None:
    return None


async def _per_request(target: ASGIApp) -> float:
    started = time.perf_counter()
    for _ in range(PER_ROUND):
        await target({"type": "http", "method": "GET", "path": "/x"}, _receive, _send)
    return (time.perf_counter() - started) / PER_ROUND


async def main() -> None:
    wrapped = RequestMetrics(app)
    plain, metered = [], []
    for _ in range(ROUNDS):
        plain.append(await _per_request(app))
        metered.append(await _per_request(wrapped))
    base, with_metrics = statistics.median(plain), statistics.median(metered)
    print(f"plain ASGI call        {base * 1e6:8.2f} us/request (median of {ROUNDS} x {PER_ROUND})")
    print(f"with RequestMetrics    {with_metrics * 1e6:8.2f} us/request")
    print(f"middleware cost        {(with_metrics - base) * 1e6:8.2f} us/request")


if __name__ == "__main__":
    asyncio.run(main())
