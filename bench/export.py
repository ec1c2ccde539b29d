"""Benchmark: archive export of 100,000 decisions from a `valdrix serve` process on a fresh PostgreSQL database.

Rows are bulk-inserted with SQLAlchemy Core (decisions, one ledger row each, an approval request for every
REQUIRE_APPROVAL decision) under three policy versions. The server's RSS is sampled from /proc while the archive
streams; the archive is then verified offline. Target: RSS growth < 100 MiB.

Run:  PYTHONPATH=$PWD /work/main/.venv/bin/python bench/export.py [--decisions 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select

from tests.live import make_tenant
from tests.pg import create_database, free_port, postgres_cluster
from valdrix.approvals.models import ApprovalRequest
from valdrix.approvals.tokens import generate_key_file
from valdrix.audit.verify import verify
from valdrix.canonical import sha256_hex
from valdrix.config import Settings
from valdrix.db import make_engine
from valdrix.decisions.models import Decision
from valdrix.ledger.models import LedgerEntry
from valdrix.migrate import upgrade
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import SCHEMA_VERSION, PolicyDocument

BATCH = 5000
PROJECTS = [f"project-{i:02d}" for i in range(20)]
RESOURCES = ["module.db.aws_db_instance.main", "module.web.aws_instance.app", "module.cache.aws_elasticache_cluster.c",
             "module.k8s.kubernetes_deployment.api", "module.queue.aws_sqs_queue.jobs"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def policies(conn: Any, tenant_id: uuid.UUID, now: datetime) -> list[tuple[int, str, str]]:
    """Add policy versions 2 and 3 (hard mode, then forecast basis); return (version, sha, mode) of all three."""
    base = PolicyDocument()
    hard = base.model_copy(update={"mode_matrix": base.mode_matrix.model_validate(
        {s: {"default": "hard", "prod": "hard", "nonprod": "hard"} for s in ("terraform", "k8s_admission",
                                                                             "cloud_event")})})
    forecast = base.model_copy(update={"budget_basis": "forecast"})
    for version, doc in ((2, hard), (3, forecast)):
        conn.execute(insert(PolicyVersion), [{"id": uuid.uuid4(), "tenant_id": tenant_id, "version": version,
                                              "schema_version": SCHEMA_VERSION, "document": doc.canonical(),
                                              "sha256": doc.sha256(), "created_by": None, "created_at": now}])
    rows = conn.execute(select(PolicyVersion.version, PolicyVersion.sha256).where(PolicyVersion.tenant_id == tenant_id)
                        .order_by(PolicyVersion.version)).all()
    return [(v, sha, {1: "soft", 2: "hard", 3: "soft"}[v]) for v, sha in rows]


def populate(url: str, tenant_id: uuid.UUID, count: int, start: datetime) -> None:
    rng = random.Random(7)
    engine = make_engine(Settings(database_url=url))
    with engine.begin() as conn:
        versions = policies(conn, tenant_id, start)
    step = timedelta(days=20) / count
    for offset in range(0, count, BATCH):
        decisions, ledger, approvals = [], [], []
        for i in range(offset, min(count, offset + BATCH)):
            now = start + step * i
            version, sha, mode = versions[i * len(versions) // count]
            project, resource = rng.choice(PROJECTS), rng.choice(RESOURCES)
            monthly = Decimal(rng.randint(1, 500_000)) / 100
            verdict = rng.choices(["ALLOW", "REQUIRE_APPROVAL", "DENY"], [80, 12, 8])[0]
            if mode == "hard" and verdict == "REQUIRE_APPROVAL":
                verdict = "DENY"
            active = verdict == "ALLOW"
            risk = rng.choice(["low", "low", "medium", "high"])
            context = {"context_version": "valdrix.computed_context.v1", "generated_at": now.isoformat(),
                       "policy_version": version, "mode": mode, "mode_scope": "terraform:nonprod",
                       "month_start": "2026-01-01", "month_end": "2026-01-31", "month_elapsed_days": now.day,
                       "month_total_days": 31, "budget_basis": "forecast" if version == 3 else "reservations",
                       "budget_scope": project, "budget_limit_usd": "100000.0000",
                       "scope_reserved_usd": f"{rng.randint(0, 90000)}.0000", "scope_headroom_usd": "10000.0000",
                       "reserved_credits_headroom_usd": "0.0000", "emergency_credits_headroom_usd": "0.0000",
                       "tenant_reserved_total_usd": None, "risk_class": risk, "risk_score": rng.randint(0, 9),
                       "risk_factors": [], "spend": None}
            reasons = {"ALLOW": [], "DENY": ["budget_exceeded"], "REQUIRE_APPROVAL": ["approval_required"]}[verdict]
            request = {"project_id": project, "environment": "nonprod", "action": "terraform.apply",
                       "resource_reference": resource, "estimated_monthly_delta_usd": str(monthly),
                       "estimated_hourly_delta_usd": str((monthly / 730).quantize(Decimal("0.000001"))),
                       "metadata": {"run_id": f"run-{i}", "computed_risk_class": risk}, "dry_run": False}
            response = {"mode": mode, "mode_scope": "terraform:nonprod", "ttl_seconds": 900,
                        "entitlement_waterfall": [{"stage": "allocation", "amount_usd": str(monthly)}],
                        "reserved_credit_split_usd": {"reserved": "0.0000", "emergency": "0.0000"},
                        "fail_safe_trigger": None}
            decision_id = uuid.uuid4()
            approval_id = uuid.uuid4() if verdict == "REQUIRE_APPROVAL" else None
            decisions.append({
                "id": decision_id, "tenant_id": tenant_id, "source": "terraform", "environment": "nonprod",
                "project_id": project, "action": "terraform.apply", "resource_reference": resource,
                "decision": verdict, "reason_codes": reasons, "mode": mode, "fail_safe": False, "dry_run": False,
                "policy_version": version, "policy_sha256": sha, "request_fingerprint": sha256_hex(request),
                "idempotency_key": f"terraform:run-{i}:pre_apply", "estimated_monthly_delta_usd": monthly,
                "estimated_hourly_delta_usd": (monthly / 730).quantize(Decimal("0.000001")),
                "budget_scope": project, "reserved_allocation_usd": monthly if active else Decimal(0),
                "reserved_credit_usd": Decimal(0), "reservation_active": active,
                "approval_request_id": approval_id, "request_payload": request, "response_payload": response,
                "computed_context": context, "created_by": None, "created_at": now, "updated_at": now})
            ledger.append({
                "id": uuid.uuid4(), "tenant_id": tenant_id, "decision_id": decision_id, "event": "decision_created",
                "source": "terraform", "environment": "nonprod", "project_id": project, "decision": verdict,
                "reason_codes": reasons, "policy_version": version, "policy_sha256": sha,
                "request_fingerprint": sha256_hex(request), "estimated_monthly_delta_usd": monthly,
                "estimated_hourly_delta_usd": (monthly / 730).quantize(Decimal("0.000001")),
                "reserved_total_usd": monthly if active else Decimal(0), "reservation_active": active,
                "approval_request_id": approval_id, "request_payload_sha256": sha256_hex(request),
                "response_payload_sha256": sha256_hex(response), "details": {}, "actor": None, "recorded_at": now})
            if approval_id is not None:
                approvals.append({
                    "id": approval_id, "tenant_id": tenant_id, "decision_id": decision_id, "status": "pending",
                    "requested_by": None, "reviewed_by": None, "review_notes": None,
                    "routing": {"rule_id": "default", "required_permission": "approve:nonprod"},
                    "routing_rule_id": "default", "required_permission": "approve:nonprod",
                    "expires_at": now + timedelta(minutes=15), "approved_at": None, "denied_at": None,
                    "expired_at": None, "token_jti": None, "token_hash": None, "token_expires_at": None,
                    "token_sealed": None, "token_picked_up_at": None, "token_consumed_at": None,
                    "token_consumed_by": None, "created_at": now, "updated_at": now})
        with engine.begin() as conn:
            conn.execute(insert(Decision), decisions)
            conn.execute(insert(LedgerEntry), ledger)
            if approvals:
                conn.execute(insert(ApprovalRequest), approvals)
    # Fresh planner statistics, as autovacuum would gather after a bulk load.
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    with postgres_cluster() as cluster, tempfile.TemporaryDirectory(prefix="valdrix-bench-") as tmp:
        url = create_database(cluster, "valdrix_bench")
        upgrade(url)
        settings = Settings(database_url=url)
        tenant = make_tenant(settings, "")
        start = datetime(2026, 1, 5, tzinfo=UTC)
        began = time.monotonic()
        populate(url, tenant.id, args.decisions, start)
        print(f"inserted {args.decisions} decisions (+ledger, approvals) in {time.monotonic() - began:.1f} s")
        keys = Path(tmp) / "keys"
        generate_key_file(keys, "bench")
        port = free_port()
        env = {**os.environ, "VALDRIX_DATABASE_URL": url, "VALDRIX_PORT": str(port),
               "VALDRIX_SIGNING_KEYS_DIR": str(keys), "VALDRIX_SIGNING_ACTIVE_KID": "bench"}
        proc = subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tenant.owner_key}"},
                                  timeout=None)
            for _ in range(200):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            window = {"start": "2026-01-01", "end": "2026-01-31"}
            client.get("/api/v1/enforcement/exports/parity", params={"start": "2020-01-01", "end": "2020-01-02"})
            baseline = rss_kib(proc.pid)
            peak = baseline
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_kib(proc.pid))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            began = time.monotonic()
            out = Path(tmp) / "archive.zip"
            with client.stream("GET", "/api/v1/enforcement/exports/archive", params=window) as response, \
                    out.open("wb") as handle:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    handle.write(chunk)
            archive_seconds = time.monotonic() - began
            began = time.monotonic()
            parity = client.get("/api/v1/enforcement/exports/parity", params=window).json()
            parity_seconds = time.monotonic() - began
            done.set()
            sampler.join()
            jwks = client.get("/.well-known/jwks.json").json()
        finally:
            proc.terminate()
            proc.wait(10)
        began = time.monotonic()
        report = verify(out, jwks)
        verify_seconds = time.monotonic() - began
        print(f"archive: {archive_seconds:.1f} s, {out.stat().st_size / 2**20:.1f} MiB zip; "
              f"parity: {parity_seconds:.1f} s (parity_ok={parity['parity_ok']}, "
              f"decisions={parity['decision_count_exported']}, approvals={parity['approval_count_exported']}, "
              f"ledger={parity['ledger_count_exported']})")
        print(f"server RSS: baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
              f"growth {(peak - baseline) / 1024:.1f} MiB (target < 100 MiB)")
        print(f"offline verify: {verify_seconds:.1f} s, {'VERIFIED' if report.ok else report.problems()[:5]}")
        if not report.ok or parity["decision_count_exported"] != args.decisions or peak - baseline >= 100 * 1024:
            sys.exit(1)


if __name__ == "__main__":
    main()
