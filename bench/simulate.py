"""Policy simulation benchmark: replay 100 000 recorded decisions, next to the gate's own decisions/s.

Per backend (SQLite file, and a throwaway PostgreSQL): one `valdrix serve` process; a tenant with budgets for
20 projects, credit grants and a policy of shadow mode outside production, soft in production, and a plan
ceiling. First the gate: `--gate` preflights with a realistic mix (amounts, environments, projects, unpriced
resources) through HTTP from 4 client threads; its decisions/s is the baseline. Those real decisions are then
copied (new ids, spread over the last 29 days) until the window holds `--decisions` of them, and
POST /policies/simulate replays the window twice: under the current policy (every outcome must come back: 0
changed) and under a mode flip (terraform shadow → hard). Printed: wall time, the server's CPU time,
decisions/s and the server's RSS growth during the replay (sampled from /proc), with the host reference of
`bench/host.py`; then the mode flip as `valdrix policy simulate` shows it.

    .venv/bin/python bench/simulate.py [--backends sqlite,postgresql] [--decisions 100000] [--gate 2000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gate import cpu_seconds, server_pids  # noqa: E402
from bench.host import reference_loop_ms  # noqa: E402
from tests.live import Tenant, make_tenant, process_servers  # noqa: E402
from tests.pg import create_database, postgres_cluster  # noqa: E402
from valdrix.cli.policy import render  # noqa: E402
from valdrix.config import Settings  # noqa: E402
from valdrix.db import make_engine  # noqa: E402
from valdrix.decisions.models import Decision  # noqa: E402
from valdrix.migrate import upgrade  # noqa: E402
from valdrix.policies.schemas import PolicyDocument  # noqa: E402

API = "/api/v1/enforcement"
PROJECTS = [f"project-{i:02d}" for i in range(20)]
THREADS = 4
BATCH = 5000


def policy(terraform_nonprod: str) -> dict[str, Any]:
    doc = PolicyDocument().canonical()
    doc["mode_matrix"]["terraform"].update(default=terraform_nonprod, nonprod=terraform_nonprod, prod="soft")
    doc["entitlements"]["plan_monthly_ceiling_usd"] = "5000000"
    return doc


def setup(c: httpx.Client) -> None:
    c.put(f"{API}/policies", json=policy("shadow")).raise_for_status()
    c.put(f"{API}/budgets", json={"budgets": [{"scope_key": p, "monthly_limit_usd": str(2000 + 500 * i)}
                                              for i, p in enumerate(PROJECTS)]}).raise_for_status()
    for project in PROJECTS[:10]:
        c.post(f"{API}/credits", json={"pool": "reserved", "scope_key": project, "amount_usd": "1500"}
               ).raise_for_status()
    c.post(f"{API}/credits", json={"pool": "emergency", "scope_key": "default", "amount_usd": "20000"}
           ).raise_for_status()


def gate_body(rng: random.Random, run: str) -> dict[str, Any]:
    amount = rng.choice([rng.uniform(1, 60), rng.uniform(60, 400), rng.uniform(300, 1500), rng.uniform(4000, 7000)])
    body: dict[str, Any] = {
        "run_id": run, "stage": "pre_apply", "project_id": rng.choice(PROJECTS),
        "environment": rng.choice(["prod", "staging", "dev", "dev"]),
        "resource_reference": rng.choice(["module.db.aws_db_instance.main", "module.web.aws_instance.app",
                                          "module.k8s.aws_eks_node_group.gpu", "module.cache.aws_elasticache.c"]),
        "estimated_monthly_delta_usd": f"{amount:.2f}", "metadata": {"team": rng.choice(["pay", "search", "ml"])}}
    if rng.random() < 0.05:
        body["metadata"]["pricing"] = {"unpriced_count": 1}
    return body


def run_gate(tenant: Tenant, count: int) -> float:
    """Return the gate's decisions/s over `count` new preflight decisions from THREADS client threads."""
    def lane(index: int) -> None:
        rng = random.Random(index)
        with tenant.client() as c:
            for i in range(index, count, THREADS):
                r = c.post(f"{API}/gate/terraform/preflight", json=gate_body(rng, f"bench-{index}-{i}"))
                r.raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lane, range(THREADS)))
    return count / (time.monotonic() - started)


def amplify(database_url: str, tenant_id: uuid.UUID, total: int, now: datetime) -> int:
    """Copy the tenant's gate decisions (new ids and keys, spread over 29 days) until there are `total`."""
    engine = make_engine(Settings(database_url=database_url))
    try:
        with engine.begin() as conn:
            originals = [dict(row._mapping) for row in conn.execute(
                select(Decision.__table__).where(Decision.tenant_id == tenant_id))]
        missing = total - len(originals)
        step = timedelta(days=29) / max(1, missing)
        rows: list[dict[str, Any]] = []
        for i in range(missing):
            row = dict(originals[i % len(originals)])
            row.update(id=uuid.uuid4(), idempotency_key=f"copy-{i}", created_at=now - timedelta(days=29) + step * i)
            rows.append(row)
            if len(rows) == BATCH or i == missing - 1:
                with engine.begin() as conn:
                    conn.execute(insert(Decision.__table__), rows)
                rows = []
        return len(originals)
    finally:
        engine.dispose()


class RssSampler:
    """Samples the server processes' total RSS every 50 ms while running; `growth_mib` is peak - start."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 1024


def simulate(c: httpx.Client, url: str, document: dict[str, Any]) -> tuple[dict[str, Any], float, float, float]:
    """Return the report, wall seconds, server CPU seconds and server RSS growth (MiB) of one simulation."""
    pids = server_pids(url)
    cpu = cpu_seconds(pids)
    with RssSampler(pids) as rss:
        started = time.monotonic()
        r = c.post(f"{API}/policies/simulate", json={"policy": document, "window_days": 30, "limit": 10},
                   timeout=600)
        elapsed = time.monotonic() - started
    r.raise_for_status()
    return r.json(), elapsed, cpu_seconds(pids) - cpu, rss.growth_mib


def bench_backend(backend: str, database_url: str, decisions: int, gate: int) -> Console:
    upgrade(database_url)
    with process_servers(database_url, 1) as urls:
        url = urls[0]
        tenant = make_tenant(Settings(database_url=database_url), url)
        with tenant.client() as c:
            setup(c)
        reference = reference_loop_ms()
        gate_rate = run_gate(tenant, gate)
        recorded = amplify(database_url, tenant.id, decisions, datetime.now(UTC))
        with tenant.client() as c:
            same, same_s, same_cpu, same_rss = simulate(c, url, policy("shadow"))
            flip, flip_s, flip_cpu, flip_rss = simulate(c, url, policy("hard"))
    assert same["decisions_evaluated"] == decisions, same["decisions_evaluated"]
    if same["changed"] or same["not_replayable"]["total"]:
        sys.exit(f"{backend}: replay under the current policy changed {same['changed']} decisions")
    for label, report, seconds, cpu, rss in (("current policy", same, same_s, same_cpu, same_rss),
                                             ("mode flip", flip, flip_s, flip_cpu, flip_rss)):
        print(f"| {backend} | {label} | {report['decisions_evaluated']} | {seconds:.2f} | {cpu:.2f} | "
              f"{report['decisions_evaluated'] / seconds:,.0f} | {gate_rate:,.0f} | {report['changed']} | "
              f"{rss:.1f} | {recorded} | {reference:.0f} |", flush=True)
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render(flip, console)
    return console


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--gate", type=int, default=2000, help="decisions made through the gate first")
    args = parser.parse_args()
    print("| backend | replayed under | decisions | seconds | server CPU s | simulated decisions/s | "
          "gate decisions/s | changed | server RSS growth MiB | recorded by the gate | reference loop ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summaries = []
    with ExitStack() as stack:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                url = f"sqlite:///{tmp}/bench.db"
            else:
                url = create_database(stack.enter_context(postgres_cluster()), "bench_simulate")
            summaries.append((backend, bench_backend(backend, url, args.decisions, args.gate)))
    for backend, console in summaries:
        print(f"\n`valdrix policy simulate` of the mode flip on {backend}:\n")
        print(console.export_text())


if __name__ == "__main__":
    main()
