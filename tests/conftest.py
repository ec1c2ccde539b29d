"""Fixtures: the throwaway PostgreSQL cluster, one live server per backend, and a fresh tenant per test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import wheel
from tests.live import LiveServer, SigningKeys, Tenant, thread_server
from tests.pg import create_database, postgres_cluster
from valdrix.approvals.tokens import generate_key_file, retire_key_file
from valdrix.config import Settings
from valdrix.migrate import upgrade

BACKENDS = [b for b in os.environ.get("VALDRIX_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "third_party"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url(pg_cluster: str) -> str:
    """A migrated PostgreSQL database shared by the session (tests isolate by tenant)."""
    url = create_database(pg_cluster, "valdrix_test")
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'valdrix.db'}"
    upgrade(url)
    return url


def settings_for(url: str, **extra: object) -> Settings:
    return Settings(database_url=url, **extra)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    """A key directory with an active signing key and a retired, verify-only one (its private key kept aside)."""
    root = tmp_path_factory.mktemp("signing")
    keys = root / "keys"
    generate_key_file(keys, "test-active")
    generate_key_file(keys, "test-retired")
    retired_private = (keys / "test-retired.pem").read_bytes()
    retire_key_file(keys, "test-retired")
    return SigningKeys(directory=keys, active_kid="test-active", retired_kid="test-retired",
                       retired_private_pem=retired_private)


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, signing_keys: SigningKeys) -> Iterator[LiveServer]:
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    with thread_server(settings_for(url, **signing_keys.settings()), request.param) as live:
        yield live


@pytest.fixture(scope="session")
def client_server(sqlite_url: str, signing_keys: SigningKeys) -> Iterator[LiveServer]:
    """One gate for the tests of the client as users install it: they test the client, not the backends."""
    with thread_server(settings_for(sqlite_url, **signing_keys.settings()), "sqlite") as live:
        yield live


@pytest.fixture
def tenant(server: LiveServer) -> Iterator[Tenant]:
    server.clock.offset = type(server.clock.offset)(0)
    yield server.tenant()
    server.clock.offset = type(server.clock.offset)(0)


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="valdrix-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> wheel.Artefacts:
    """The wheel and sdist, built once per test run."""
    return wheel.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def client_install(artefacts: wheel.Artefacts,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """Return a function giving the bin directory of a venv (one per Python version) with only the client wheel.

    The first call starts every supported version's install at once (pip mostly waits on its subprocesses and
    the disk, so side by side they take about the time of one); each call then waits for its own.
    """
    venvs: dict[str, Future[Path | None]] = {}

    def build(version: str) -> Path | None:
        python = wheel.interpreter(version)
        if python is None:
            return None
        return wheel.client_venv(python, artefacts.wheel, tmp_path_factory.mktemp(f"client-{version}"))

    with ThreadPoolExecutor(max_workers=len(wheel.SUPPORTED)) as pool:

        def install(version: str) -> Path:
            if not venvs:
                venvs.update({v: pool.submit(build, v) for v in wheel.SUPPORTED})
            if version not in venvs:
                venvs[version] = pool.submit(build, version)
            bin_dir = venvs[version].result()
            if bin_dir is None:
                pytest.skip(f"python{version} is not installed on this machine (not on PATH, not in pyenv)")
            return bin_dir

        yield install
