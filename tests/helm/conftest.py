"""The real helm binary for the chart tests: $VALDRIX_HELM or .tools/bin/helm (fetched by scripts/fetch-helm.sh
when missing). Without helm the tests skip locally but FAIL when the CI environment variable is set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm() -> str:
    candidate = os.environ.get("VALDRIX_HELM") or str(ROOT / ".tools" / "bin" / "helm")
    if not _works(candidate):
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch-helm.sh")], check=False, cwd=ROOT)
    if not _works(candidate):
        message = f"helm not available at {candidate} (scripts/fetch-helm.sh failed)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return candidate


def _works(path: str) -> bool:
    try:
        return subprocess.run([path, "version", "--short"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
