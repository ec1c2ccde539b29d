"""The fault scenarios: servers on a database, mixed load, faults at set times, then the invariant check.

Used by `tests/reliability/test_faults.py` (short, bounded runs) and `bench/faults.py` (longer runs, figures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.live import make_tenant
from tests.pg import Cluster
from tests.reliability import invariants
from tests.reliability.load import (
    API,
    APPROVAL_SCOPE,
    APPROVALS,
    LIMITED_SCOPE,
    Consume,
    Failure,
    Keys,
    Load,
    Observations,
)
from tests.reliability.servers import Replica
from valdrix.approvals.tokens import generate_key_file
from valdrix.config import Settings
from valdrix.migrate import upgrade

SIGNING_KID = "reliability"
# The least load time after a fault healed, so that every affected server can show it recovered.
SETTLE_SECONDS = 3.0
# The servers' gate deadline (`VALDRIX_GATE_TIMEOUT_SECONDS`, the default).
GATE_DEADLINE_SECONDS = Settings().gate_timeout_seconds


@dataclass
class Fault:
    """One injected fault: when it began, when the system was whole again, and which servers it hit."""

    name: str
    servers: list[str]
    started: float
    healed: float = 0.0
    # When every affected server gave a served (non-fail-safe, non-5xx) answer after `healed`; None if never.
    recovered: float | None = None
    # What the affected servers answered unserved once back (after `healed`), by kind, until the next fault.
    aftershocks: Counter[str] = field(default_factory=Counter)

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.healed


@dataclass
class Run:
    name: str
    seconds: float
    obs: Observations
    faults: list[Fault]
    violations: list[Failure] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        """Violated invariants and failed answers (500s, broken promises a client saw)."""
        return [*self.violations, *self.obs.failures]

    def figures(self) -> str:
        lines = [f"{self.name}: {self.obs.requests} requests in {self.seconds:.1f} s, "
                 f"{len(self.obs.failures)} failed answers, {len(self.violations)} invariant violations"]
        lines += [f"  error {kind}: {count}" for kind, count in sorted(self.obs.errors.items())]
        if self.obs.gate_seconds:
            gate = sorted(self.obs.gate_seconds)
            late = sum(1 for seconds in gate if seconds > GATE_DEADLINE_SECONDS + 0.1)
            lines.append(f"  gate answers: {len(gate)}, p50 {gate[len(gate) // 2] * 1000:.0f} ms, "
                         f"p99 {gate[int(len(gate) * 0.99)] * 1000:.0f} ms, max {gate[-1] * 1000:.0f} ms, "
                         f"{late} later than the {GATE_DEADLINE_SECONDS:g} s deadline + 100 ms")
        for fault in self.faults:
            took = fault.recovery_seconds
            lines.append(f"  fault {fault.name}: lasted {fault.healed - fault.started:.2f} s, served again "
                         + (f"{took * 1000:.0f} ms after" if took is not None else "never after")
                         + (f"; unserved once back: {dict(fault.aftershocks)}" if fault.aftershocks else ""))
        lines += [f"  answer {kind}: {count}" for kind, count in sorted(self.obs.answers.items())]
        return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """A database with its servers, and a fresh tenant configured for the load."""

    database_url: str
    urls: list[str]
    tenant_id: uuid.UUID
    keys: Keys


def signing_env(directory: Path) -> dict[str, str]:
    if not (directory / f"{SIGNING_KID}.pem").exists():
        generate_key_file(directory, SIGNING_KID)
    return {"VALDRIX_SIGNING_KEYS_DIR": str(directory), "VALDRIX_SIGNING_ACTIVE_KID": SIGNING_KID}


@contextmanager
def replicas(database_url: str, count: int, env: dict[str, str], name: str) -> Iterator[list[Replica]]:
    """Migrate the database and start `count` replicas on it; stop them after."""
    upgrade(database_url)
    started: list[Replica] = []
    try:
        for index in range(count):
            replica = Replica(database_url, env, f"{name}-{index}")
            replica.start()
            started.append(replica)
        yield started
    finally:
        for replica in started:
            replica.stop()


def prepare(database_url: str, urls: list[str], limit: str) -> Target:
    """Create a tenant in hard mode: `LIMITED_SCOPE` capped at `limit`, the approval scope out of reach."""
    tenant = make_tenant(Settings(database_url=database_url), urls[0])
    reviewer = tenant.owner_key
    pipeline = tenant.key("pipeline", role="member")
    with tenant.client() as c:
        doc = c.get(f"{API}/policies").json()["document"]
        for source in doc["mode_matrix"].values():
            source.update(default="hard", prod="hard", nonprod="hard")
        assert c.put(f"{API}/policies", json=doc).status_code == 200
        r = c.put(f"{API}/budgets", json={"budgets": [
            {"scope_key": LIMITED_SCOPE, "monthly_limit_usd": limit},
            {"scope_key": APPROVAL_SCOPE, "monthly_limit_usd": "1000000"}]})
        assert r.status_code == 200, r.text
    return Target(database_url, urls, tenant.id, Keys(pipeline=pipeline, reviewer=reviewer))


def kill_replica(replica: Replica, down_seconds: float) -> Callable[[Observations], Fault]:
    def act(obs: Observations) -> Fault:
        fault = Fault(f"kill -9 {replica.name}, restart after {down_seconds:g} s", [replica.url], obs.now())
        replica.kill()
        time.sleep(down_seconds)
        replica.start()
        fault.healed = obs.now()
        return fault
    return act


def restart_postgres(cluster: Cluster, servers: list[Replica]) -> Callable[[Observations], Fault]:
    def act(obs: Observations) -> Fault:
        fault = Fault("PostgreSQL restart", [s.url for s in servers], obs.now())
        cluster.stop("fast")
        cluster.start()
        fault.healed = obs.now()
        return fault
    return act


def stop_postgres(cluster: Cluster, servers: list[Replica], down_seconds: float) -> Callable[[Observations], Fault]:
    def act(obs: Observations) -> Fault:
        fault = Fault(f"PostgreSQL crash, down {down_seconds:g} s", [s.url for s in servers], obs.now())
        cluster.stop("immediate")
        time.sleep(down_seconds)
        cluster.start()
        fault.healed = obs.now()
        return fault
    return act


def freeze_postgres(cluster: Cluster, servers: list[Replica], seconds: float) -> Callable[[Observations], Fault]:
    """SIGSTOP every process of the cluster: connections hang instead of failing, as on a stalled host."""
    def act(obs: Observations) -> Fault:
        fault = Fault(f"PostgreSQL frozen {seconds:g} s", [s.url for s in servers], obs.now())
        postmaster = (cluster.data / "postmaster.pid").read_text().split()[0]
        children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True).stdout.split()
        pids = [int(pid) for pid in (postmaster, *children)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        fault.healed = obs.now()
        return fault
    return act


def run(name: str, target: Target, schedule: list[tuple[float, Callable[[Observations], Fault]]], *,
        seconds: float, threads: int, seed: int = 1) -> Run:
    """Load `target` for `seconds`, firing each scheduled fault at its offset; then check the invariants."""
    load = Load(target.urls, target.keys, threads=threads, seed=seed)
    obs = load.obs
    load.start()
    faults: list[Fault] = []
    try:
        # However long a restart took on a busy host, the load goes on a while after each fault before the next
        # one or the end, so every fault shows its own recovery.
        for at, act in sorted(schedule, key=lambda item: item[0]):
            time.sleep(max(0.0, at - obs.now(), _settled(faults) - obs.now()))
            faults.append(act(obs))
        time.sleep(max(0.0, seconds - obs.now(), _settled(faults) - obs.now()))
    finally:
        load.stop()
    # Each fault's window ends where the next one starts (the last one's at the end of the run).
    for fault, end in zip(faults, [*(f.started for f in faults[1:]), obs.now()], strict=False):
        fault.recovered = _recovered(obs, fault)
        fault.aftershocks = Counter(kind for at, server, served, kind in obs.timeline
                                    if not served and server in fault.servers and kind is not None
                                    and fault.healed <= at < end)
        if fault.recovered is None:
            obs.fail("no_recovery", f"{fault.name}: the affected servers never served again after the fault")
    outcome = Run(name, obs.now(), obs, faults)
    outcome.violations = invariants.check(target.database_url, target.tenant_id, obs, _retriever(target))
    return outcome


def _settled(faults: list[Fault]) -> float:
    return faults[-1].healed + SETTLE_SECONDS if faults else 0.0


def _recovered(obs: Observations, fault: Fault) -> float | None:
    first: dict[str, float] = {}
    for at, server, served, _ in obs.timeline:
        if served and at >= fault.healed and server in fault.servers and server not in first:
            first[server] = at
    return max(first.values()) if len(first) == len(fault.servers) else None


def _retriever(target: Target) -> invariants.Retrieve:
    def retrieve(consume: Consume) -> bool:
        with httpx.Client(base_url=target.urls[0], timeout=10,
                          headers={"Authorization": f"Bearer {target.keys.pipeline}"}) as c:
            r = c.post(f"{APPROVALS}/consume", json=consume.body, headers={"Idempotency-Key": consume.key})
        consume.answers.append(f"retrieve {r.status_code}")
        return r.status_code == 200 and r.json().get("decision_id") == consume.decision_id
    return retrieve

