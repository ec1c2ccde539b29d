"""The API contract, machine-checked: the OpenAPI document says what the server does, and schemathesis holds
the live server (real HTTP, each backend) to it with every check and a fixed seed."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer, Tenant

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
# Bounded for the 2-core CI machine (both backends together in a few minutes even when it is busy).
MAX_EXAMPLES = 30
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
def test_schemathesis_finds_no_failure(tenant: Tenant, server: LiveServer) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "--no-color", "run",
         f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {tenant.owner_key}",
         "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
         # One worker: CPython 3.11 can fail ast.parse in threads (gh-106905), inside schemathesis itself.
         "--workers", "1",
         "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - started
    summary = re.search(r"Test cases:\s*\n\s*(.+)", run.stdout)
    print(f"schemathesis on {server.backend}: {summary.group(1) if summary else '?'} in {elapsed:.1f} s")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert summary is not None and " passed" in summary.group(1) and "fail" not in summary.group(1)
