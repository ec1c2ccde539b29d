"""Fault injection under mixed load: crashed replicas, a restarted and a stopped PostgreSQL, a crashed SQLite server.

Expected faults (connection refused while a server is down, 503 from non-gate routes while the database is) are
counted, not failed; a 500, a broken promise a client saw, or a violated invariant fails the test. Figures:
`bench/faults.py`, `docs/reliability.md`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import Cluster, create_database, running_cluster
from tests.reliability import scenarios
from tests.reliability.servers import Replica, urls

pytestmark = pytest.mark.slow

# Short enough for `make test` on 2 cores, long enough that every fault meets requests in flight.
THREADS = 6
LIMIT = "600"
@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return scenarios.signing_env(tmp_path_factory.mktemp("reliability-keys"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(crash_safe=True) as running:
        yield running


@pytest.fixture(scope="module")
def pg_replicas(cluster: Cluster, signing: dict[str, str]) -> Iterator[tuple[str, list[Replica]]]:
    url = create_database(cluster.url, "reliability")
    with scenarios.replicas(url, 2, signing, "pg") as servers:
        yield url, servers


def _assert_clean(run: scenarios.Run) -> None:
    print(run.figures())
    assert run.obs.requests > 100, run.figures()
    assert run.obs.consumes, run.figures()
    assert run.failures == [], run.figures() + "\n" + "\n".join(f"{f.kind}: {f.detail}" for f in run.failures[:20])


def test_replica_killed_and_restarted(pg_replicas: tuple[str, list[Replica]]) -> None:
    url, servers = pg_replicas
    target = scenarios.prepare(url, urls(servers), LIMIT)
    run = scenarios.run("replica kill -9", target, [(3.0, scenarios.kill_replica(servers[0], 1.0))],
                        seconds=12, threads=THREADS)
    assert run.obs.errors["connection_refused"] + run.obs.errors["connection_lost"] > 0, run.figures()
    _assert_clean(run)


def test_postgres_restarted_stopped_and_frozen(cluster: Cluster, pg_replicas: tuple[str, list[Replica]]) -> None:
    url, servers = pg_replicas
    target = scenarios.prepare(url, urls(servers), LIMIT)
    run = scenarios.run("PostgreSQL restart, stop and freeze", target,
                        [(2.0, scenarios.restart_postgres(cluster, servers)),
                         (5.0, scenarios.stop_postgres(cluster, servers, 5.0)),
                         (13.0, scenarios.freeze_postgres(cluster, servers, 5.0))],
                        seconds=21, threads=THREADS)
    _assert_clean(run)


def test_sqlite_server_killed_and_restarted(tmp_path: Path, signing: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path}/reliability.db"
    with scenarios.replicas(url, 1, signing, "sqlite") as servers:
        target = scenarios.prepare(url, urls(servers), LIMIT)
        run = scenarios.run("SQLite kill -9", target, [(3.0, scenarios.kill_replica(servers[0], 0.0))],
                            seconds=10, threads=4)
    assert run.obs.errors["connection_refused"] + run.obs.errors["connection_lost"] > 0, run.figures()
    _assert_clean(run)
