"""Cross-replica races on PostgreSQL: three server processes, one approval, one token, one consume."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.pipeline import APPROVALS, preflight, set_budget
from tests.live import SigningKeys, Tenant, make_tenant, process_servers
from tests.pg import create_database
from valdrix.config import Settings
from valdrix.migrate import upgrade

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def replicas(pg_cluster: str, signing_keys: SigningKeys) -> Iterator[tuple[Tenant, list[str]]]:
    url = create_database(pg_cluster, "valdrix_approvals_race")
    upgrade(url)
    # A tenant before the replicas start: they find a non-empty database and skip bootstrapping.
    tenant = make_tenant(Settings(database_url=url), "")
    with process_servers(url, 3, env=signing_keys.env()) as urls:
        yield tenant, urls


def _race(urls: list[str], key: str, path: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    barrier = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=urls[i % len(urls)], headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as c:
            barrier.wait()
            return c.post(path, json=body)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def _metric_sum(urls: list[str], sample: str) -> float:
    total = 0.0
    for url in urls:
        for line in httpx.get(url + "/metrics").text.splitlines():
            if line.startswith(sample + " "):
                total += float(line.split()[-1])
    return total


def test_32_concurrent_approves_issue_one_token(replicas: tuple[Tenant, list[str]]) -> None:
    tenant, urls = replicas
    reviewer = tenant.key("reviewer", role="owner")
    with httpx.Client(base_url=urls[0], headers={"Authorization": f"Bearer {tenant.owner_key}"}) as ci:
        set_budget(ci)
        gate = preflight(ci, run="approve-race")
    backlog = 'valdrix_ops_enforcement_approval_queue_backlog{required_permission="approve:prod"}'
    assert all(_metric_sum([u], backlog) >= 1 for u in urls)  # every replica reads the backlog from the database
    results = _race(urls, reviewer, f"{APPROVALS}/{gate['approval_request_id']}/approve", {}, 32)
    statuses = Counter(r.status_code for r in results)
    tokens = {r.json()["approval_token"] for r in results if r.status_code == 200}
    assert statuses == {200: 1, 409: 31}, statuses
    assert len(tokens) == 1
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"approval_already_reviewed"}
    with httpx.Client(base_url=urls[1], headers={"Authorization": f"Bearer {tenant.owner_key}"}) as ci:
        events = [e["event"] for e in ci.get("/api/v1/enforcement/ledger").json()["items"]
                  if e["decision_id"] == gate["decision_id"]]
    assert events == ["decision_created", "approval_approved"]


def test_64_concurrent_consumes_burn_once(replicas: tuple[Tenant, list[str]]) -> None:
    tenant, urls = replicas
    reviewer = tenant.key("reviewer", role="owner")
    with httpx.Client(base_url=urls[0], headers={"Authorization": f"Bearer {tenant.owner_key}"}) as ci, \
            httpx.Client(base_url=urls[2], headers={"Authorization": f"Bearer {reviewer}"}) as rv:
        set_budget(ci)
        gate = preflight(ci, run="consume-race")
        token = rv.post(f"{APPROVALS}/{gate['approval_request_id']}/approve", json={}).json()["approval_token"]
    replays_before = _metric_sum(urls, 'valdrix_ops_enforcement_approval_token_events_total{event="token_replayed"}')
    body = {"approval_token": token, **gate["continuation"]["binding"]}
    results = _race(urls, tenant.owner_key, f"{APPROVALS}/consume", body, 64)
    statuses = Counter(r.status_code for r in results)
    assert statuses == {200: 1, 409: 63}, statuses
    assert {r.json()["code"] for r in results if r.status_code == 409} == {"token_replayed"}
    replays = _metric_sum(urls, 'valdrix_ops_enforcement_approval_token_events_total{event="token_replayed"}')
    assert replays - replays_before == 63
    with httpx.Client(base_url=urls[1], headers={"Authorization": f"Bearer {tenant.owner_key}"}) as ci:
        events = [e["event"] for e in ci.get("/api/v1/enforcement/ledger").json()["items"]
                  if e["decision_id"] == gate["decision_id"]]
    assert events.count("token_consumed") == 1
