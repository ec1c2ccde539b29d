"""The API contract, machine-checked: the OpenAPI document says what the server does, and schemathesis holds
the live server (real HTTP, each backend) to it with every check and a fixed seed."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, settings_for
from tests.live import LiveServer, SigningKeys, make_tenant, process_servers

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
# Bounded for the 2-core CI machine: 20 gave 4 647 cases (SQLite) in 63 s, 30 gave 5 095 in 91 s, both backends
# side by side (most cases come from the coverage phase, whatever this number).
MAX_EXAMPLES = 20
SEED = 18
PROBLEM = "application/problem+json"


def _spec(server: LiveServer) -> dict[str, object]:
    spec: dict[str, object] = httpx.get(server.url + "/openapi.json", timeout=30).json()
    return spec


def test_the_document_declares_models_problems_security_and_operation_ids(server: LiveServer) -> None:
    spec = _spec(server)
    paths: dict[str, dict[str, dict[str, object]]] = spec["paths"]  # type: ignore[assignment]
    components: dict[str, dict[str, object]] = spec["components"]  # type: ignore[assignment]
    assert components["securitySchemes"]["bearer"] == {  # type: ignore[comparison-overlap]
        "type": "http", "scheme": "bearer", "description": "An API key (`vxk_…`) as a bearer token"}
    seen: set[str] = set()
    for path, operations in paths.items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            operation_id = str(op["operationId"])
            assert re.fullmatch(r"[a-z][a-z0-9_]*", operation_id) and operation_id not in seen, where
            seen.add(operation_id)
            responses: dict[str, dict[str, dict[str, object]]] = op["responses"]  # type: ignore[assignment]
            ok = next(s for s in responses if s.startswith("2"))
            if ok != "204":  # No Content has no model
                content = responses[ok]["content"]
                media = "application/zip" if path.endswith("/exports/archive") else "application/json"
                assert list(content) == [media], where
                schema = content[media]["schema"]
                # A model, the archive's bytes, or one of several models (PUT /policies: saved, or dry-run report).
                choices = schema.get("oneOf") or []  # type: ignore[attr-defined]
                assert schema.get("$ref") or schema.get("format") == "binary" or (  # type: ignore[attr-defined]
                    choices and all("$ref" in choice for choice in choices)), (where, schema)
            errors = {s: r for s, r in responses.items() if s[0] in "45"}
            assert errors or path == "/.well-known/jwks.json", where
            for status, response in errors.items():
                assert list(response["content"]) == [PROBLEM], (where, status)
                assert response["x-problem-codes"], (where, status)
            if path not in ("/.well-known/jwks.json", "/api/v1/enforcement/integrations/terraform-cloud/run-task"):
                assert {"bearer": []} in op["security"], where  # type: ignore[operator]
                assert "401" in responses or path.endswith("/admission/review"), where
    assert paths["/api/v1/enforcement/policies/versions/{version}"]["get"]["operationId"] == "get_version"


@pytest.mark.slow
def test_schemathesis_finds_no_failure(request: pytest.FixtureRequest, signing_keys: SigningKeys,
                                       tmp_path: Path) -> None:
    """Every backend's server process under its own schemathesis run, all side by side: a run and its server
    mostly wait on each other (about half a core each, measured), so two backends take the time of one."""
    runs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        for backend in BACKENDS:
            database_url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
            [url] = stack.enter_context(process_servers(database_url, 1, env=signing_keys.env()))
            owner_key = make_tenant(settings_for(database_url), url).owner_key
            output = tmp_path / f"{backend}.log"
            log = stack.enter_context(output.open("wb"))
            runs[backend] = (subprocess.Popen(
                [str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "--no-color", "run",
                 f"{url}/openapi.json", "--header", f"Authorization: Bearer {owner_key}",
                 "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
                 # One worker: CPython 3.11 can fail ast.parse in threads (gh-106905), inside schemathesis itself.
                 "--workers", "1",
                 "--request-timeout", "30"],
                stdout=log, stderr=subprocess.STDOUT), output)
        for backend, (run, output) in runs.items():
            returncode = run.wait(timeout=600)
            text = output.read_text(errors="replace")
            summary = re.search(r"Test cases:\s*\n\s*(.+)", text)
            print(f"schemathesis on {backend}: {summary.group(1) if summary else '?'}, "
                  f"{time.monotonic() - started:.1f} s since the runs started")
            assert returncode == 0, f"{backend}:\n{text[-25000:]}"
            assert summary is not None and " passed" in summary.group(1) and "fail" not in summary.group(1), backend
