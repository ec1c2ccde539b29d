"""Mixed load on the embedded default: reads, preflights and consumes side by side on SQLite, one worker.

Starts one `valdrix serve` process (default settings: SQLite in WAL, one worker process) on a fresh file, makes
a tenant with a budget and a stock of approved approval tokens, then drives 64 concurrent clients (one asyncio
loop, keep-alive connections) for `--duration` seconds, each request chosen at random: 50 % reads
(GET /budgets, /decisions, /policies), 40 % preflights (every one a new decision), 10 % consumes (a
fresh token while the stock lasts, then a used one: 409 token_replayed is its expected answer). First, as the
same-run baseline, the same 64 clients send only the reads for a third of the duration.

Prints per phase: requests, 5xx, fail-safe answers by reason, and p50/p99 latency per kind. Targets (issue 18):
0 x 5xx, 0 fail-safe answers (nothing but the server's own load is going on), p99 of reads under 100 ms.

    .venv/bin/python bench/mixed.py [--duration 30] [--clients 64] [--tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.pipeline import approved_token, set_budget  # noqa: E402
from tests.live import make_tenant, process_servers  # noqa: E402
from valdrix.config import Settings  # noqa: E402
from valdrix.migrate import upgrade  # noqa: E402

API = "/api/v1/enforcement"
READS = (f"{API}/budgets", f"{API}/decisions?limit=20", f"{API}/policies")


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}
        self.status: Counter[str] = Counter()
        self.fail_safe: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()

    def add(self, kind: str, seconds: float, response: httpx.Response, expected: tuple[int, ...]) -> None:
        self.latency.setdefault(kind, []).append(seconds)
        self.status[f"{response.status_code // 100}xx"] += 1
        if response.status_code not in expected:
            self.unexpected[f"{kind} {response.status_code} {response.text[:80]}"] += 1
        if kind == "preflight" and response.status_code == 200:
            for reason in response.json()["reason_codes"]:
                if reason.startswith("gate_"):
                    self.fail_safe[reason] += 1

    def report(self, title: str, seconds: float) -> None:
        total = sum(len(v) for v in self.latency.values())
        print(f"\n{title}: {total} requests in {seconds:.1f} s ({total / seconds:.0f}/s); "
              f"5xx: {self.status['5xx']}; fail-safe answers: {dict(self.fail_safe) or 0}")
        for kind, values in sorted(self.latency.items()):
            ordered = sorted(values)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            print(f"  {kind:<10} n={len(values):>6}  p50={statistics.median(values) * 1000:7.1f} ms  "
                  f"p99={p99 * 1000:7.1f} ms  max={ordered[-1] * 1000:7.1f} ms")
        for what, n in self.unexpected.most_common(5):
            print(f"  unexpected x{n}: {what}")


async def drive(url: str, key: str, clients: int, seconds: float, mix: bool, tokens: list[dict[str, Any]],
                tally: Tally, run: str) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    used: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=30) as http:
        stop = time.monotonic() + seconds

        async def client(n: int) -> None:
            rng = random.Random(n)
            i = 0
            while time.monotonic() < stop:
                i += 1
                pick = rng.random() if mix else 0.0
                began = time.monotonic()
                try:
                    await one(rng, pick, n, i, began)
                except httpx.TransportError as exc:  # e.g. a keep-alive connection the server closed idle
                    tally.unexpected[f"transport {type(exc).__name__}"] += 1

        async def one(rng: random.Random, pick: float, n: int, i: int, began: float) -> None:
            if pick < 0.5:
                r = await http.get(rng.choice(READS))
                tally.add("read", time.monotonic() - began, r, (200,))
            elif pick < 0.9:
                body = {"run_id": f"{run}-{n}-{i}", "project_id": f"p{n % 16}",
                        "resource_reference": f"aws_instance.r{n}-{i}", "estimated_monthly_delta_usd": "1.25"}
                r = await http.post(f"{API}/gate/terraform/preflight", json=body)
                tally.add("preflight", time.monotonic() - began, r, (200,))
            else:
                fresh = bool(tokens)
                consume = tokens.pop() if fresh else rng.choice(used)
                r = await http.post(f"{API}/approvals/consume", json=consume)
                tally.add("consume", time.monotonic() - began, r, (200,) if fresh else (409,))
                if fresh:
                    used.append(consume)

        await asyncio.gather(*(client(n) for n in range(clients)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    duration = min(args.duration, 120.0)  # bounded: this is a shared machine
    with tempfile.TemporaryDirectory(prefix="valdrix-mixed-") as directory:
        url = f"sqlite:///{directory}/valdrix.db"
        upgrade(url)
        tenant = make_tenant(Settings(database_url=url), "")
        keys = Path(directory) / "keys"
        from valdrix.approvals.tokens import generate_key_file

        generate_key_file(keys, "bench")
        env = {"VALDRIX_SIGNING_KEYS_DIR": str(keys), "VALDRIX_SIGNING_ACTIVE_KID": "bench"}
        with process_servers(url, 1, env=env) as [server]:
            tenant.url = server
            reviewer = tenant.key("reviewer", role="owner")
            tokens: list[dict[str, Any]] = []
            with tenant.client() as ci, tenant.client(reviewer) as rv:
                set_budget(ci, "100000000")
                ci.put(f"{API}/budgets", json={"budgets": [{"scope_key": f"p{i}", "monthly_limit_usd": "100000000"}
                                                           for i in range(16)] +
                                              [{"scope_key": "payments", "monthly_limit_usd": "100000000"}]})
                for i in range(args.tokens):
                    gate, token = approved_token(ci, rv, run=f"stock-{i}")
                    tokens.append({"approval_token": token, **gate["continuation"]["binding"]})
            print(f"SQLite, 1 worker, {args.clients} clients; {len(tokens)} approved tokens in stock")
            baseline = Tally()
            began = time.monotonic()
            asyncio.run(drive(server, tenant.owner_key, args.clients, duration / 3, False, [], baseline, "base"))
            baseline.report("baseline (reads only)", time.monotonic() - began)
            mixed = Tally()
            began = time.monotonic()
            asyncio.run(drive(server, tenant.owner_key, args.clients, duration, True, tokens, mixed, "mix"))
            mixed.report("mixed (50 % reads, 40 % preflights, 10 % consumes)", time.monotonic() - began)


if __name__ == "__main__":
    main()
