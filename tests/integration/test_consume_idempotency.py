"""Consume never loses an approval (issue 18): an Idempotency-Key replays a consume whose answer was lost,
and nothing else can use the token again — through a connection that drops the answer, and concurrently."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.pipeline import APPROVALS, approved_token, consume, set_budget
from tests.live import Tenant
from valdrix.client import ApiError, GateClient


def _consume(c: httpx.Client, token: str, gate: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return c.post(f"{APPROVALS}/consume", json={"approval_token": token, **gate["continuation"]["binding"]},
                  headers=headers)


def test_the_same_key_replays_and_anything_else_is_token_replayed(tenant: Tenant) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci)
        gate, token = approved_token(ci, rv, run="idem")
        first = _consume(ci, token, gate, "pipeline-42")
        assert first.status_code == 200 and first.json()["replayed"] is False, first.text
        again = _consume(ci, token, gate, "pipeline-42")
        assert again.status_code == 200 and again.json()["replayed"] is True, again.text
        assert {k: v for k, v in again.json().items() if k != "replayed"} == \
            {k: v for k, v in first.json().items() if k != "replayed"}
        for key in ("pipeline-43", None):
            r = _consume(ci, token, gate, key)
            assert (r.status_code, r.json()["code"]) == (409, "token_replayed"), r.text
        r = consume(ci, token, gate, expected_resource_reference="module.other")
        assert r.status_code == 409
        mismatched = ci.post(f"{APPROVALS}/consume", headers={"Idempotency-Key": "pipeline-42"},
                             json={"approval_token": token, **gate["continuation"]["binding"],
                                   "expected_resource_reference": "module.other"})
        assert (mismatched.status_code, mismatched.json()["code"]) == \
            (409, "expected_resource_reference_mismatch"), mismatched.text
        events = ci.get("/api/v1/enforcement/ledger", params={"decision_id": gate["decision_id"]}).json()["items"]
        assert [e["event"] for e in events].count("token_consumed") == 1


@contextmanager
def dropping_proxy(upstream: str, drop: int) -> Iterator[str]:
    """A TCP proxy to `upstream` that forwards each request and its complete answer, except that for the first
    `drop` connections it reads the answer and then closes the client's connection without sending it: the
    server committed, the client saw a reset."""
    target = urlsplit(upstream)
    listener = socket.create_server(("127.0.0.1", 0))
    dropped = 0
    lock = threading.Lock()

    def relay(client: socket.socket) -> None:
        nonlocal dropped
        with client, socket.create_connection((target.hostname, target.port)) as server:
            request = _read_message(client)
            server.sendall(request)
            answer = _read_message(server)
            with lock:
                lose = dropped < drop
                dropped += lose
            if lose:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return  # closing with linger 0 sends a reset instead of the answer
            client.sendall(answer)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=relay, args=(client,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _read_message(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_consume_whose_answer_is_lost_succeeds_on_retry_and_no_one_else_can_use_the_token(
        tenant: Tenant) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci)
        gate, token = approved_token(ci, rv, run="lost")
        binding = gate["continuation"]["binding"]
        endpoint = gate["continuation"]["approval_consume_endpoint"]
        with dropping_proxy(tenant.url, drop=1) as proxy, \
                GateClient(proxy, tenant.owner_key, retries=3, backoff=0.01) as pipeline:
            body = pipeline.consume(endpoint, token, binding, "run-7-consume")
        assert body["status"] == "consumed" and body["replayed"] is True  # the committed first consume
        events = ci.get("/api/v1/enforcement/ledger", params={"decision_id": gate["decision_id"]}).json()["items"]
        assert [e["event"] for e in events].count("token_consumed") == 1
        with GateClient(tenant.url, tenant.owner_key, retries=0) as second_pipeline, \
                pytest.raises(ApiError) as refused:
            second_pipeline.consume(endpoint, token, binding, "run-8-consume")
        assert refused.value.code == "token_replayed"
        r = consume(ci, token, gate)
        assert (r.status_code, r.json()["code"]) == (409, "token_replayed")


def test_concurrent_consumers_one_burn_same_key_all_answered(tenant: Tenant) -> None:
    reviewer = tenant.key("reviewer", role="owner")
    with tenant.client() as ci, tenant.client(reviewer) as rv:
        set_budget(ci, "100000")
        gate, token = approved_token(ci, rv, run="same")
        gate2, token2 = approved_token(ci, rv, run="other")
    with ThreadPoolExecutor(16) as pool:
        def call(args: tuple[str, dict[str, Any], str | None]) -> httpx.Response:
            with tenant.client() as c:
                return _consume(c, *args)

        same = list(pool.map(call, [(token, gate, "shared-key")] * 12))
        mixed = list(pool.map(call, [(token2, gate2, f"key-{i}") for i in range(12)]))
    assert all(r.status_code == 200 for r in same), [r.text for r in same if r.status_code != 200]
    assert sorted(r.json()["replayed"] for r in same) == [False] + [True] * 11
    assert sorted(r.status_code for r in mixed) == [200] + [409] * 11
    assert {r.json()["code"] for r in mixed if r.status_code == 409} == {"token_replayed"}
