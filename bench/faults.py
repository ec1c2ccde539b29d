"""Fault injection, longer runs: the `tests/reliability` scenarios with repeated faults, and their figures.

Each scenario first runs its load without faults (the baseline), then again with faults injected at fixed
intervals; it prints requests, errors by kind, gate answer times, the recovery time after each fault, and the
invariant check (`tests/reliability/invariants.py`) of both runs.

    .venv/bin/python bench/faults.py                      # every scenario, 60 s each
    .venv/bin/python bench/faults.py --seconds 30 --scenario sqlite
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pg import Cluster, create_database, running_cluster
from tests.reliability import scenarios
from tests.reliability.load import Observations
from tests.reliability.servers import Replica, urls

Schedule = list[tuple[float, Callable[[Observations], scenarios.Fault]]]


def replica_faults(servers: list[Replica], seconds: float) -> Schedule:
    """Kill -9 each replica in turn every 15 s, restarting it after 1 s."""
    return [(at, scenarios.kill_replica(servers[index % len(servers)], 1.0))
            for index, at in enumerate(range(5, int(seconds) - 8, 15))]


def postgres_faults(cluster: Cluster, servers: list[Replica], seconds: float) -> Schedule:
    """Every 36 s: restart PostgreSQL; 10 s later crash it, down for 5 s; 12 s later freeze it for 5 s."""
    out: Schedule = []
    for at in range(5, int(seconds) - 30, 36):
        out += [(float(at), scenarios.restart_postgres(cluster, servers)),
                (float(at + 10), scenarios.stop_postgres(cluster, servers, 5.0)),
                (float(at + 22), scenarios.freeze_postgres(cluster, servers, 5.0))]
    return out


def sqlite_faults(server: Replica, seconds: float) -> Schedule:
    """Kill -9 the SQLite server every 15 s and start it again at once."""
    return [(float(at), scenarios.kill_replica(server, 0.0)) for at in range(5, int(seconds) - 8, 15)]


def report(baseline: scenarios.Run, faulted: scenarios.Run) -> None:
    for run in (baseline, faulted):
        print(run.figures())
        rate = run.obs.requests / run.seconds
        print(f"  throughput {rate:.0f} requests/s"
              + (f" ({rate / (baseline.obs.requests / baseline.seconds):.0%} of the baseline)"
                 if run is faulted else " (baseline, no faults)"))
        kinds = Counter(failure.kind for failure in run.failures)
        print(f"  failures by kind: {dict(kinds) or 'none'}")
        for failure in run.failures[:5]:
            print(f"    {failure.kind}: {failure.detail[:200]}")
    print()


def compare(name: str, database_url: str, servers: list[Replica], faults: str, schedule: Schedule,
            args: argparse.Namespace) -> None:
    """Run the load on `servers` without faults (each run in a fresh tenant), then with `schedule`; report."""
    runs = [scenarios.run(f"{name}, {label}", scenarios.prepare(database_url, urls(servers), args.limit), plan,
                          seconds=args.seconds, threads=args.threads)
            for label, plan in (("no faults", []), (faults, schedule))]
    report(*runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration of each run")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--limit", default="3000", help="hard monthly limit of the scope most traffic draws on")
    parser.add_argument("--scenario", choices=("all", "replica", "postgres", "sqlite"), default="all")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # figures as each run ends
    keys = scenarios.signing_env(Path(tempfile.mkdtemp(prefix="valdrix-faults-keys-")))
    if args.scenario in ("all", "replica", "postgres"):
        with running_cluster(crash_safe=True) as cluster:
            url = create_database(cluster.url, "faults")
            with scenarios.replicas(url, 2, keys, "bench-pg") as servers:
                if args.scenario in ("all", "replica"):
                    compare("2 replicas on PostgreSQL", url, servers, "replicas killed",
                            replica_faults(servers, args.seconds), args)
                if args.scenario in ("all", "postgres"):
                    compare("2 replicas on PostgreSQL", url, servers, "PostgreSQL restarted, crashed and frozen",
                            postgres_faults(cluster, servers, args.seconds), args)
    if args.scenario in ("all", "sqlite"):
        url = f"sqlite:///{tempfile.mkdtemp(prefix='valdrix-faults-')}/faults.db"
        with scenarios.replicas(url, 1, keys, "bench-sqlite") as servers:
            compare("1 server on SQLite", url, servers, "killed", sqlite_faults(servers[0], args.seconds), args)


if __name__ == "__main__":
    main()
