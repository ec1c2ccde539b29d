"""Benchmark: console page render times with 100,000 decisions in the database, on SQLite and PostgreSQL.

The history is bulk-inserted as in bench/export.py (its overdue approvals marked expired, as the worker's sweep
leaves them); 30 fresh requests come through the real preflight API so the queue has content. A browser session
is opened through the sign-in form, then each page is fetched 100 times over loopback from a `valdrix serve`
process. The figures are client-side round trips, an upper bound of the server-side render time; `GET /healthz`
in the same run is the baseline cost of a round trip. Target: p95 < 100 ms per page.

Run:  PYTHONPATH=$PWD .venv/bin/python bench/console.py [--decisions 100000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import update

from bench.export import populate
from tests.live import make_tenant
from tests.pg import create_database, free_port, postgres_cluster
from valdrix.approvals.models import ApprovalRequest
from valdrix.approvals.tokens import generate_key_file
from valdrix.config import Settings
from valdrix.db import make_engine
from valdrix.migrate import upgrade

RUNS = 100


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'console.db'}"
        return
    with postgres_cluster() as cluster:
        yield create_database(cluster, "valdrix_console")


def timings(client: httpx.Client, path: str) -> tuple[float, float]:
    for _ in range(5):
        assert client.get(path).status_code == 200, path
    samples = []
    for _ in range(RUNS):
        began = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def run(backend: str, count: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="valdrix-console-") as tmp_name, \
            database(backend, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        upgrade(url)
        tenant = make_tenant(Settings(database_url=url), "")
        began = time.monotonic()
        populate(url, tenant.id, count, datetime.now(UTC) - timedelta(days=21))
        engine = make_engine(Settings(database_url=url))
        with engine.begin() as conn:  # what the worker's expiry sweep leaves behind
            conn.execute(update(ApprovalRequest).where(ApprovalRequest.status == "pending")
                         .values(status="expired", expired_at=datetime.now(UTC)))
        engine.dispose()
        print(f"{backend}: {count} decisions inserted in {time.monotonic() - began:.1f} s")
        generate_key_file(tmp / "keys", "bench")
        port = free_port()
        env = {**os.environ, "VALDRIX_DATABASE_URL": url, "VALDRIX_PORT": str(port),
               "VALDRIX_SIGNING_KEYS_DIR": str(tmp / "keys"), "VALDRIX_SIGNING_ACTIVE_KID": "bench"}
        proc = subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tenant.owner_key}"}, timeout=60)
            for _ in range(300):
                try:
                    if api.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            api.put("/api/v1/enforcement/budgets", json={"budgets": [
                {"scope_key": "project-01", "monthly_limit_usd": "100000"}]}).raise_for_status()
            fresh = []
            for i in range(30):
                r = api.post("/api/v1/enforcement/gate/terraform/preflight", json={
                    "run_id": f"fresh-{i}", "project_id": "project-01", "environment": "prod",
                    "resource_reference": "module.db.aws_db_instance.main", "estimated_monthly_delta_usd": "250"})
                r.raise_for_status()
                fresh.append(r.json())
            browser = httpx.Client(base_url=base, timeout=60, follow_redirects=True)
            form = browser.get("/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            signed = browser.post("/console/login", data={"api_key": tenant.owner_key, "csrf": csrf.group(1),
                                                          "next": "/console/approvals"})
            assert signed.status_code == 200 and "Waiting for approval" in signed.text, signed.status_code
            old = api.get("/api/v1/enforcement/decisions", params={"limit": "1", "project_id": "project-07"}).json()
            pages = {
                "GET /healthz (baseline)": "/healthz",
                "approvals queue": "/console/approvals",
                "approval detail": f"/console/approvals/{fresh[0]['approval_request_id']}",
                "approval history": "/console/approvals/history",
                "history, status=expired": "/console/approvals/history?status=expired",
                "decisions (newest)": "/console/decisions",
                "decisions, project + outcome": "/console/decisions?project_id=project-07&decision=DENY",
                "decisions, one day": "/console/decisions?since="
                                      f"{(datetime.now(UTC) - timedelta(days=10)).date()}&until="
                                      f"{(datetime.now(UTC) - timedelta(days=9)).date()}",
                "decision detail": f"/console/decisions/{old['items'][0]['decision_id']}",
                "budgets": "/console/budgets",
            }
            ok = True
            print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8}")
            for name, path in pages.items():
                p50, p95 = timings(browser, path)
                ok = ok and (p95 < 100 or name.startswith("GET /healthz"))
                print(f"{name:32} {p50:8.1f} {p95:8.1f}")
        finally:
            proc.terminate()
            proc.wait(10)
        return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [run(backend, args.decisions) for backend in backends]
    if not all(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
