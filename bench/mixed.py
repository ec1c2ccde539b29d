"""Mixed load on the embedded default: reads, preflights and consumes side by side on SQLite, one worker.

Starts one `valdrix serve` process (default settings: SQLite in WAL, one worker process) on a fresh file, makes
a tenant with budgets and a stock of approved approval tokens, then drives `--clients` concurrent clients, each
on its own keep-alive connection (`bench/keepalive.py`: a generator that costs the server's CPU almost nothing).
Each request is chosen at random: 50 % reads (GET /budgets, /decisions, /policies), 40 % preflights (every one
a new decision), 10 % consumes (a fresh token while the stock lasts, then a used one: 409 token_replayed is its
expected answer).

Three phases, the first two at the same offered load (`--rate` requests/s per client, Poisson, open loop per
client: a request's latency counts from when it was due, so a slow answer also delays the ones behind it):

1. baseline: reads only, for a third of `--duration`;
2. mixed, for `--duration`: the issue 18 targets are 0 x 5xx, 0 fail-safe answers (nothing but the server's own
   load is going on) and p99 of reads under 100 ms;
3. capacity: the same mix with no pause between requests (each client sends its next request when the last
   is answered), for a third of `--duration`. It measures the throughput of one worker; its latencies are
   the queue of `--clients` requests in flight (Little's law: latency = clients / throughput), not a target.

Prints per phase: requests, offered and achieved rates, 5xx, fail-safe answers by reason, p50/p99 latency per
kind, and the server's CPU share.

    .venv/bin/python bench/mixed.py [--duration 30] [--clients 64] [--rate 2] [--tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gate import cpu_seconds, server_pids  # noqa: E402
from bench.keepalive import KeepAliveClient  # noqa: E402
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

    def add(self, kind: str, seconds: float, status: int, body: bytes, expected: tuple[int, ...]) -> None:
        self.latency.setdefault(kind, []).append(seconds)
        self.status[f"{status // 100}xx"] += 1
        if status not in expected:
            self.unexpected[f"{kind} {status} {body[:80]!r}"] += 1
        if kind == "preflight" and status == 200:
            for reason in json.loads(body)["reason_codes"]:
                if reason.startswith("gate_"):
                    self.fail_safe[reason] += 1

    def report(self, title: str, seconds: float, offered: float | None, cpu: float) -> None:
        total = sum(len(v) for v in self.latency.values())
        load = f"offered {offered:.0f}/s, " if offered else ""
        print(f"\n{title}: {total} requests in {seconds:.1f} s ({load}achieved {total / seconds:.0f}/s; "
              f"server CPU {cpu / seconds:.0%} of a core); 5xx: {self.status['5xx']}; "
              f"fail-safe answers: {dict(self.fail_safe) or 0}")
        for kind, values in sorted(self.latency.items()):
            ordered = sorted(values)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            print(f"  {kind:<10} n={len(values):>6}  p50={statistics.median(values) * 1000:7.1f} ms  "
                  f"p99={p99 * 1000:7.1f} ms  max={ordered[-1] * 1000:7.1f} ms")
        for what, n in self.unexpected.most_common(5):
            print(f"  unexpected x{n}: {what}")


class Tokens:
    """Approved tokens: fresh ones until the stock runs out, then ones already consumed (answered 409)."""

    def __init__(self) -> None:
        self.fresh: list[dict[str, Any]] = []
        self.used: list[dict[str, Any]] = []


async def drive(url: str, key: str, clients: int, seconds: float, rate: float | None, mix: bool,
                tokens: Tokens, tally: Tally, run: str) -> None:
    """Run `clients` clients for `seconds`, each sending `rate` requests/s (None: one after another)."""
    host, port = url.removeprefix("http://").split(":")
    stop = time.monotonic() + seconds

    async def client(n: int) -> None:
        rng = random.Random(n)
        http = KeepAliveClient(host, int(port), key)
        due = time.monotonic() + (rng.expovariate(rate) if rate else 0.0)
        i = 0
        try:
            while True:
                if rate:  # open loop: the latency counts from when the request was due
                    if due >= stop:
                        break
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    began, due = due, due + rng.expovariate(rate)
                else:
                    began = time.monotonic()
                    if began >= stop:
                        break
                i += 1
                kind, request, expected, consumed = pick(http, rng, n, i, mix)
                try:
                    status, _, body = await http.send(request)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    tally.unexpected[f"transport {type(exc).__name__}"] += 1
                    continue
                tally.add(kind, time.monotonic() - began, status, body, expected)
                if consumed is not None:
                    tokens.used.append(consumed)
        finally:
            http.close()

    def pick(http: KeepAliveClient, rng: random.Random, n: int, i: int,
             mix: bool) -> tuple[str, bytes, tuple[int, ...], dict[str, Any] | None]:
        choice = rng.random() if mix else 0.0
        if choice < 0.5:
            return "read", http.request("GET", rng.choice(READS)), (200,), None
        if choice < 0.9:
            body = {"run_id": f"{run}-{n}-{i}", "project_id": f"p{n % 16}",
                    "resource_reference": f"aws_instance.r{n}-{i}", "estimated_monthly_delta_usd": "1.25"}
            return "preflight", http.request("POST", f"{API}/gate/terraform/preflight", body), (200,), None
        if tokens.fresh:
            fresh = tokens.fresh.pop()
            return "consume", http.request("POST", f"{API}/approvals/consume", fresh), (200,), fresh
        if tokens.used:
            return "consume", http.request("POST", f"{API}/approvals/consume", rng.choice(tokens.used)), (409,), None
        return "read", http.request("GET", rng.choice(READS)), (200,), None  # the first consumes are in flight

    await asyncio.gather(*(client(n) for n in range(clients)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s each client offers")
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
            tokens = Tokens()
            with tenant.client() as ci, tenant.client(reviewer) as rv:
                set_budget(ci, "100000000")
                ci.put(f"{API}/budgets", json={"budgets": [{"scope_key": f"p{i}", "monthly_limit_usd": "100000000"}
                                                           for i in range(16)] +
                                              [{"scope_key": "payments", "monthly_limit_usd": "100000000"}]})
                for i in range(args.tokens):
                    gate, token = approved_token(ci, rv, run=f"stock-{i}")
                    tokens.fresh.append({"approval_token": token, **gate["continuation"]["binding"]})
            print(f"SQLite, 1 worker, {args.clients} clients at {args.rate:g} requests/s each "
                  f"({args.clients * args.rate:.0f}/s offered); {len(tokens.fresh)} approved tokens in stock")
            pids = server_pids(server)
            phases = (("baseline (reads only)", duration / 3, args.rate, False),
                      ("mixed (50 % reads, 40 % preflights, 10 % consumes)", duration, args.rate, True),
                      ("capacity (the same mix, no pause between requests)", duration / 3, None, True))
            for title, seconds, rate, mix in phases:
                tally = Tally()
                began, cpu = time.monotonic(), cpu_seconds(pids)
                asyncio.run(drive(server, tenant.owner_key, args.clients, seconds, rate, mix, tokens, tally,
                                  title.split()[0]))
                tally.report(title, time.monotonic() - began, args.clients * rate if rate else None,
                             cpu_seconds(pids) - cpu)

if __name__ == "__main__":
    main()
