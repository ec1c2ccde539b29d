"""Admission webhook load test: server-side p50/p95/p99 and peak RSS at a fixed open-loop request rate.

Starts a private PostgreSQL cluster (durable: fsync and synchronous_commit on, as the reference implementation
was measured) and one `valdrix serve` process (--workers worker processes, default 2)
on 127.0.0.1, then offers (a) fast-path ConfigMap reviews and (b) priced Deployment reviews (each a new uid,
so each is a decision persisted in PostgreSQL with its reservation and ledger row) at RATE requests/s for
SECONDS each. The Deployments go to one namespace, so every decision queues on one budget row (the worst
case), or cycle over --namespaces, each its own budget scope.
Server-side latency is the `Server-Timing: gate;dur=` the handler reports (body read → answer built);
client-side latency (including HTTP on loopback) is printed alongside. Peak RSS is VmHWM of the server.
Each phase also prints the host reference (bench/host.py), the CPU time of a fixed Python loop taken just
before it: this shared VM's speed varies several-fold, and the figures with it.

Run: PYTHONPATH=$PWD .venv/bin/python bench/admission.py [--rate 200] [--seconds 20] [--namespaces 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.host import reference_loop_ms  # noqa: E402
from bench.keepalive import KeepAliveClient  # noqa: E402
from tests.live import _wait_ready, make_tenant  # noqa: E402
from tests.pg import create_database, free_port, postgres_cluster  # noqa: E402
from valdrix.config import Settings  # noqa: E402
from valdrix.migrate import upgrade  # noqa: E402

PATH = "/api/v1/enforcement/gate/k8s/admission/review"
DEPLOYMENT = json.loads((ROOT / "tests" / "fixtures" / "third_party" / "k8s-objects" / "kubectl-generated" /
                         "deployment-web-requests-limits.json").read_text())
CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}


def review(obj: dict[str, Any], resource: str, group: str, namespace: str = "bench") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": group, "version": "v1", "kind": obj["kind"]},
        "resource": {"group": group, "version": "v1", "resource": resource}, "namespace": namespace,
        "name": obj["metadata"]["name"], "operation": "CREATE", "userInfo": {"username": "bench"},
        "object": obj, "dryRun": False}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_phase(base: str, key: str, make: Any, rate: int, seconds: int) -> dict[str, Any]:
    """Offer rate x seconds requests open-loop (rate 0: 500 requests one at a time, the uncontended cost)."""
    total = rate * seconds if rate else 500
    server: list[float] = []
    client: list[float] = []
    errors: Counter[str] = Counter()
    host, port = base.removeprefix("http://").split(":")
    http = KeepAliveClient(host, int(port), key)
    # Every request is built before the clock starts.
    requests = [http.request("POST", PATH, make()) for _ in range(total + 1)]

    async def one(request: bytes) -> None:
        sent = time.perf_counter()
        try:
            status, headers, _ = await http.send(request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            return
        client.append((time.perf_counter() - sent) * 1000)
        if status != 200:
            errors[f"HTTP {status}"] += 1
            return
        server.append(float(headers["server-timing"].split("dur=")[1]))

    await one(requests.pop())  # warm-up: caches the verified key, opens a connection
    reference = reference_loop_ms()
    server.clear()
    client.clear()
    start = time.perf_counter()
    tasks = []
    for i, request in enumerate(requests):
        # Open loop: request i leaves at start + i/rate whatever happened to earlier ones.
        if not rate:
            await one(request)
            continue
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    http.close()
    return {"load": f"{rate}/s open loop" if rate else "sequential", "reference_loop_ms": round(reference),
            "sent": total, "ok": len(server),
            "errors": sum(errors.values()), "error_kinds": dict(errors), "achieved_rps": round(total / elapsed, 1),
            "server_ms": {"p50": pct(server, .50), "p95": pct(server, .95), "p99": pct(server, .99),
                          "mean": round(statistics.fmean(server), 3)},
            "client_ms": {"p50": round(pct(client, .50), 3), "p95": round(pct(client, .95), 3),
                          "p99": round(pct(client, .99), 3)}}


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--namespaces", type=int, default=1,
                        help="priced Deployments cycle over this many namespaces, each its own budget scope "
                             "(1, the default, is the worst case: every decision queues on one budget row)")
    args = parser.parse_args()
    namespaces = [f"bench-{i}" for i in range(args.namespaces)]
    spread = itertools.cycle(namespaces)
    with postgres_cluster(durable=True) as cluster:
        url = create_database(cluster, "valdrix_bench")
        upgrade(url)
        settings = Settings(database_url=url)  # type: ignore[call-arg]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        tenant = make_tenant(settings, base, name="bench")
        env = {**os.environ, "VALDRIX_DATABASE_URL": url, "VALDRIX_PORT": str(port),
               "VALDRIX_WORKERS": str(args.workers), "VALDRIX_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(base)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tenant.owner_key}"}) as c:
                c.put("/api/v1/enforcement/budgets", json={"budgets": [
                    {"scope_key": namespace, "monthly_limit_usd": "100000000"} for namespace in namespaces]}
                      ).raise_for_status()
                doc = c.get("/api/v1/enforcement/policies").json()["document"]
                doc["mode_matrix"]["k8s_admission"].update(default="soft", prod="soft", nonprod="soft")
                c.put("/api/v1/enforcement/policies", json=doc).raise_for_status()
            results = {
                "sequential_fast_path": asyncio.run(run_phase(
                    base, tenant.owner_key, lambda: review(CONFIG_MAP, "configmaps", ""), 0, 0)),
                "sequential_priced": asyncio.run(run_phase(
                    base, tenant.owner_key, lambda: review(DEPLOYMENT, "deployments", "apps", next(spread)), 0, 0)),
                "fast_path_configmap": asyncio.run(run_phase(
                    base, tenant.owner_key, lambda: review(CONFIG_MAP, "configmaps", ""), args.rate, args.seconds)),
                "priced_deployment_persisted_postgresql": asyncio.run(run_phase(
                    base, tenant.owner_key, lambda: review(DEPLOYMENT, "deployments", "apps", next(spread)),
                    args.rate, args.seconds)),
            }
            workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                     text=True).stdout.split()
            results["server_peak_rss_mib_per_process"] = round(max(
                rss_peak_mib(pid) for pid in [proc.pid, *map(int, workers)]), 1)
            import psycopg

            with psycopg.connect(url.replace("+psycopg", "")) as conn:
                row = conn.execute("SELECT count(*) FROM decisions").fetchone()
                results["decisions_recorded_in_postgresql"] = row[0] if row else 0
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps({"rate_rps": args.rate, "seconds_per_phase": args.seconds, "namespaces": args.namespaces,
                      **results}, indent=2))


if __name__ == "__main__":
    main()
