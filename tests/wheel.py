"""The released artefacts as a user gets them: wheel and sdist built once, the client wheel in fresh venvs.

`pip install valdrix` must bring the pipeline client and nothing of the server, on every supported
interpreter; these helpers build what a release would publish and install it exactly so (dependencies come
from the package index, as on a CI runner; pip's cache keeps repeated runs quick).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = ("3.11", "3.12", "3.13", "3.14")
# Top-level modules that only `valdrix[server]` may bring.
SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "uvloop", "sqlalchemy", "alembic", "psycopg", "jwt",
                  "cryptography", "prometheus_client", "orjson", "pydantic_settings")


@dataclass(frozen=True)
class Artefacts:
    wheel: Path
    sdist: Path


def build(outdir: Path) -> Artefacts:
    """Build the wheel and the sdist with `python -m build`, as the release workflow does."""
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(outdir), str(ROOT)], check=True,
                   capture_output=True, text=True)
    [wheel] = outdir.glob("valdrix-*.whl")
    [sdist] = outdir.glob("valdrix-*.tar.gz")
    return Artefacts(wheel, sdist)


def interpreter(version: str) -> str | None:
    """Return a working `python<version>` on this machine (PATH, else a pyenv installation), or None."""
    candidates = [shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        # A pyenv shim exists for every installed version but fails unless that version is selected.
        if candidate and subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode == 0:
            return candidate
    return None


def client_venv(python: str, wheel: Path, directory: Path) -> Path:
    """Create a venv with `python` and install only the client wheel into it; return its bin directory."""
    # Without its own pip (ensurepip alone took 7 s a venv): this run's pip installs into it, resolving the
    # wheel's dependencies for that interpreter (`--python`), as the interpreter's own pip would.
    subprocess.run([python, "-m", "venv", "--without-pip", str(directory)], check=True, capture_output=True)
    bin_dir = directory / "bin"
    # --no-compile: the commands compile what they import on first run, not all of every dependency up front.
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q",
                             "--disable-pip-version-check", "--no-compile", str(wheel)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip install {wheel.name} with {python} failed:\n{result.stderr}")
    return bin_dir
