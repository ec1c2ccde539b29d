"""Settings defaults that depend on the machine: the CPUs a server may keep busy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from valdrix import config
from valdrix.config import Settings, usable_cpus

_ALLOWED = len(os.sched_getaffinity(0))


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(("files", "cpus"), [
    ({}, _ALLOWED),                                                      # no cgroup files: affinity only
    ({"cpu.max": "max 100000\n"}, _ALLOWED),                             # v2, no limit
    ({"cpu.max": "100000 100000\n"}, 1),                                 # v2, limits.cpu: "1"
    ({"cpu.max": "50000 100000\n"}, 1),                                  # v2, half a CPU still runs one process
    ({"cpu.max": "150000 100000\n"}, min(_ALLOWED, 2)),                  # v2, 1.5 CPUs
    ({"cpu.max": "6400000 100000\n"}, _ALLOWED),                         # v2, a quota above the CPUs allowed
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, _ALLOWED),  # v1, no limit
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),    # v1, one CPU
    ({"cpu.max": "garbage"}, _ALLOWED),                                  # unreadable: no limit assumed
])
def test_usable_cpus_follow_affinity_and_the_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str],
                                                              cpus: int) -> None:
    assert usable_cpus(_cgroup(tmp_path, files)) == cpus


@pytest.mark.parametrize(("cpus", "processes"), [(1, 0), (2, 2), (3, 3), (4, 4), (5, 4), (64, 4)])
def test_export_processes_default_to_one_per_usable_cpu_at_most_four_and_none_on_one(
        monkeypatch: pytest.MonkeyPatch, cpus: int, processes: int) -> None:
    monkeypatch.delenv("VALDRIX_EXPORT_PROCESSES", raising=False)
    monkeypatch.setattr(config, "usable_cpus", lambda: cpus)
    assert Settings().export_processes == processes
