"""Preflight gate benchmark: throughput, latency percentiles, CPU per decision and peak RSS.

Starts its own PostgreSQL and/or a SQLite file, one `valdrix serve` process (with worker processes), creates a
tenant with budgets for 64 projects, and drives POST /gate/terraform/preflight with `wrk` at each concurrency level
for a fixed duration, every request a new decision (unique run id; checked against the decisions recorded). CPU is
counted per decision for the server's processes and for PostgreSQL's. Loopback only.
PostgreSQL is durable (fsync, synchronous_commit and full_page_writes on), the settings the reference
implementation was measured with; the WAL it writes per decision is printed.
Each level also prints the host reference (bench/host.py): the CPU time of a fixed Python loop of
5 000 000 additions, taken just before it, because this shared VM's speed varies several-fold.

    .venv/bin/python bench/gate.py [--backends sqlite,postgresql] [--concurrency 1,8,32] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import sqlalchemy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.host import reference_loop_ms  # noqa: E402
from tests.live import make_tenant, process_servers  # noqa: E402
from tests.pg import create_database, postgres_cluster  # noqa: E402
from valdrix.config import Settings  # noqa: E402
from valdrix.migrate import upgrade  # noqa: E402

LUA = r"""
local counter = 0
local threads = {}
-- thread_id must stay a global: setup() sets it in each thread's Lua state, and a local would shadow it,
-- making both threads send the same run ids (half the requests would then be replays, not decisions).
function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local project = (counter * 7 + thread_id) % 64
  local body = string.format(
    '{"run_id":"%s-%d-%d","project_id":"p%d","resource_reference":"aws_instance.r%d",' ..
    '"estimated_monthly_delta_usd":"1.25","metadata":{"team":"bench"}}',
    RUN, thread_id, counter, project, counter)
  return wrk.format("POST", "/api/v1/enforcement/gate/terraform/preflight", HEADERS, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def tree_pids(pid: int) -> list[int]:
    """Return pid and all its descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.split("\n"):
        if line.strip():
            p, pp = map(int, line.split())
            children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def peak_rss_mib(pids: list[int]) -> dict[int, float]:
    peaks = {}
    for pid in pids:
        try:
            match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            if match:
                peaks[pid] = int(match.group(1)) / 1024
        except FileNotFoundError:
            pass
    return peaks


def server_pids(url: str) -> list[int]:
    """Return every process listening on the server's port (master and workers) and their descendants."""
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    listeners = {int(p) for p in re.findall(r"pid=(\d+)", out)}
    return sorted({pid for listener in listeners for pid in tree_pids(listener)})


def failsafe_count(url: str) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("valdrix_ops_enforcement_gate_decisions_total{") and 'path="failsafe"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def database_counts(database_url: str) -> tuple[int, int]:
    """Return the decisions recorded and the WAL bytes PostgreSQL has written so far (0 for SQLite)."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            decisions = int(connection.execute(sqlalchemy.text("SELECT count(*) FROM decisions")).scalar_one())
            if not database_url.startswith("postgresql"):
                return decisions, 0
            return decisions, int(connection.execute(sqlalchemy.text("SELECT wal_bytes FROM pg_stat_wal")).scalar_one())
    finally:
        engine.dispose()


def postgres_pids(database_url: str) -> list[int]:
    """Return the PostgreSQL server's processes (postmaster and children); none for SQLite."""
    if not database_url.startswith("postgresql"):
        return []
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            data = Path(connection.execute(sqlalchemy.text("SHOW data_directory")).scalar_one())
    finally:
        engine.dispose()
    return tree_pids(int((data / "postmaster.pid").read_text().split()[0]))


def run_level(url: str, key: str, concurrency: int, duration: int, script: Path, tag: str,
              database_url: str) -> dict[str, float]:
    env_script = script.read_text().replace("RUN,", f'"{tag}-c{concurrency}",').replace(
        "HEADERS", '{["Content-Type"]="application/json",["Authorization"]="Bearer ' + key + '"}')
    level_script = script.with_name(f"level-{concurrency}.lua")
    level_script.write_text(env_script)
    threads = min(2, concurrency)
    pids, database_pids = server_pids(url), postgres_pids(database_url)
    cpu_before, failsafe_before = cpu_seconds(pids), failsafe_count(url)
    database_cpu_before = cpu_seconds(database_pids)
    decisions_before, wal_before = database_counts(database_url)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s", "--timeout", "10s",
                          "-s", str(level_script), url], capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    result["throughput_rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["server_cpu_ms_per_decision"] = (cpu_seconds(pids) - cpu_before) * 1000 / max(1, result["requests"])
    result["database_cpu_ms_per_decision"] = ((cpu_seconds(postgres_pids(database_url)) - database_cpu_before) * 1000
                                              / max(1, result["requests"]))
    result["failsafe"] = failsafe_count(url) - failsafe_before
    result["peak_rss_mib_per_process"] = max(peak_rss_mib(pids).values())
    # Every request must be a new decision, not a replay: requests still in flight when wrk stops are
    # recorded too, hence the margin of one per connection.
    decisions_after, wal_after = database_counts(database_url)
    new = decisions_after - decisions_before
    result["wal_kib_per_decision"] = (wal_after - wal_before) / 1024 / max(1, new)
    if not result["requests"] <= new <= result["requests"] + concurrency:
        sys.exit(f"{new} decisions recorded for {result['requests']} requests: the load was not all new decisions")
    return result


def bench_backend(backend: str, database_url: str, levels: list[int], duration: int, workers: int) -> list[str]:
    upgrade(database_url)
    rows = []
    with process_servers(database_url, 1, workers=workers) as urls, tempfile.TemporaryDirectory() as tmp:
        url = urls[0]
        tenant = make_tenant(Settings(database_url=database_url), url)
        with tenant.client() as c:
            c.put("/api/v1/enforcement/budgets", json={"budgets": [
                {"scope_key": f"p{i}", "monthly_limit_usd": "1000000000"} for i in range(64)]}).raise_for_status()

        # Warm up connection pools, prepared statements and caches in every worker: one keep-alive connection
        # stays on one worker, so several at once (the server spreads simultaneous connections evenly).
        def warm(lane: int) -> None:
            with tenant.client() as c:
                for i in range(50):
                    c.post("/api/v1/enforcement/gate/terraform/preflight",
                           json={"run_id": f"warm-{lane}-{i}", "project_id": f"p{i % 64}", "resource_reference": "w",
                                 "estimated_monthly_delta_usd": "1"}).raise_for_status()

        with ThreadPoolExecutor(4 * workers) as pool:
            list(pool.map(warm, range(4 * workers)))
        script = Path(tmp) / "preflight.lua"
        script.write_text(LUA)
        for level in levels:
            reference = reference_loop_ms()
            r = run_level(url, tenant.owner_key, level, duration, script, f"{backend}-{int(time.time())}",
                          database_url)
            postgresql = backend == "postgresql"
            database_cpu = f"{r['database_cpu_ms_per_decision']:.2f}" if postgresql else "—"
            wal = f"{r['wal_kib_per_decision']:.1f}" if postgresql else "—"
            rows.append(f"| {backend} | {workers} | {level} | {r['requests']:.0f} | {r['throughput_rps']:.1f} | "
                        f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                        f"{r['non2xx'] + r['socket_errors']:.0f} | {r['failsafe']:.0f} | "
                        f"{r['server_cpu_ms_per_decision']:.2f} | {database_cpu} | {wal} | "
                        f"{r['peak_rss_mib_per_process']:.0f} | {reference:.0f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes on PostgreSQL")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk (make bench installs it)")
    levels = [int(x) for x in args.concurrency.split(",")]
    print("| backend | workers | concurrency | requests | decisions/s | p50 ms | p95 ms | p99 ms | errors | "
          "fail-safe | server CPU ms/decision | PostgreSQL CPU ms/decision | WAL KiB/decision | "
          "peak RSS MiB/process | reference loop ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with ExitStack() as stack:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                bench_backend("sqlite", f"sqlite:///{tmp}/bench.db", levels, args.duration, 1)
            else:
                cluster = stack.enter_context(postgres_cluster(durable=True))
                bench_backend("postgresql", create_database(cluster, "bench"), levels, args.duration, args.workers)


if __name__ == "__main__":
    main()
