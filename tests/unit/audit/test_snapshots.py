"""Shared snapshots: a name that is not pg_export_snapshot()'s is refused before it reaches SQL, and a formatting
process that cannot reach the database hands its batch back instead of failing the export."""

from __future__ import annotations

import socket

import pytest

from valdrix.audit.processes import read_batch
from valdrix.audit.snapshots import Shared, joined


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("name", ["", "00000003", "0000-0001'; DROP TABLE decisions; --", "abc-def", "1-2\n"])
def test_a_name_that_is_not_an_exported_snapshot_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a snapshot name"), joined(Shared("postgresql+psycopg://x@127.0.0.1/x",
                                                                             name)):
        pass


def test_a_process_that_cannot_reach_the_database_declines_its_batch() -> None:
    shared = Shared(f"postgresql+psycopg://valdrix@127.0.0.1:{closed_port()}/valdrix", "00000003-0000001B-1")
    assert read_batch(shared, "decisions.csv", "00000000-0000-0000-0000-000000000001") is None
