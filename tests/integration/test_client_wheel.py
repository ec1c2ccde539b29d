"""The client as users install it: `pip install valdrix` from the built wheel, under every interpreter here.

The venv holds the client wheel and its dependencies only; it must bring none of the server's libraries,
import every client command without them, and run a real `valdrix preflight` against a running gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.live import LiveServer
from tests.wheel import SERVER_MODULES, SUPPORTED, Artefacts

PLAN = FIXTURES / "terraform-plans" / "infracost__small_terraform_plan_nat_ebs.json"  # $54.7170/month
CLIENT_MODULES = ("valdrix.cli.preflight", "valdrix.cli.approvals", "valdrix.cli.continuation", "valdrix.cli.report",
                  "valdrix.cli.records", "valdrix.client", "valdrix.pricing.terraform", "valdrix.pricing.infracost")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CI job: no PYTHONPATH into this checkout, no CI or Valdrix variables of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "CI_", "VALDRIX_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def test_artefacts_declare_a_client_and_a_server_extra(artefacts: Artefacts) -> None:
    with zipfile.ZipFile(artefacts.wheel) as whl:
        names = set(whl.namelist())
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(whl.read(metadata_name).decode())
    assert {"valdrix/py.typed", "valdrix/pricing/data/terraform_aws.yaml", "valdrix/migrations/env.py"} <= names
    assert metadata["Requires-Python"] == ">=3.11"  # 3.14 and later are not refused
    requires = metadata.get_all("Requires-Dist") or []
    unconditional = {r.split(">")[0].split("<")[0].split("[")[0].split(";")[0].strip().lower()
                     for r in requires if "extra ==" not in r}
    assert unconditional == {"httpx", "typer", "rich", "pyyaml", "pydantic", "rfc8785"}  # rfc8785: pure Python
    server = [r for r in requires if 'extra == "server"' in r]
    assert any(r.lower().startswith("fastapi") for r in server) and any(r.lower().startswith("sqlalchemy")
                                                                         for r in server)
    # uvloop exists nowhere but CPython on Unix: the server extra must not break a Windows install.
    assert any(r.startswith("uvloop") and "sys_platform != 'win32'" in r.replace('"', "'") for r in server)
    with tarfile.open(artefacts.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "valdrix/pricing/data/terraform_aws.yaml"} <= members


@pytest.mark.slow
@pytest.mark.parametrize("version", SUPPORTED)
def test_client_wheel_runs_a_real_preflight(version: str, client_install: Callable[[str], Path],
                                            client_server: LiveServer, tmp_path: Path) -> None:
    bin_dir = client_install(version)
    python, valdrix = str(bin_dir / "python"), str(bin_dir / "valdrix")
    env = clean_env()
    found = subprocess.run([python, "-c", "import importlib.util as u, sys; "
                            "print([m for m in sys.argv[1:] if u.find_spec(m)])", *SERVER_MODULES],
                           capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert found == "[]", f"the client install brought server libraries: {found}"
    # Every client command imports without the server's libraries (they are not there to import).
    imports = subprocess.run([python, "-c", "import importlib, sys; from valdrix.cli import CLIENT, COMMANDS, load; "
                              "[load(c) for c in COMMANDS if c.panel == CLIENT]; "
                              "[importlib.import_module(m) for m in sys.argv[1:]]", *CLIENT_MODULES],
                             capture_output=True, text=True, env=env)
    assert imports.returncode == 0, imports.stderr
    listed = subprocess.run([valdrix, "--help"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and "preflight" in listed.stdout
    refused = subprocess.run([valdrix, "serve"], capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and "pip install 'valdrix[server]'" in refused.stderr

    tenant = client_server.tenant()
    with tenant.client() as c:
        assert c.put("/api/v1/enforcement/budgets", json={"budgets": [
            {"scope_key": "payments", "monthly_limit_usd": "1000"}]}).status_code == 200
    ci_key = tenant.key("ci", role="member")
    run = subprocess.run([valdrix, "preflight", "--plan", str(PLAN), "--project", "payments", "--run-id",
                          f"wheel-{version}", "--format", "json"], cwd=tmp_path, capture_output=True, text=True,
                         env=clean_env(VALDRIX_SERVER=client_server.url, VALDRIX_API_KEY=ci_key), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc["preflight"]["decision"] == "ALLOW" and doc["pricing"]["monthly_delta_usd"] == "54.7170"
