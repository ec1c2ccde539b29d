"""Benchmark: streamed audit archive, parity and offline verification of N decisions, on SQLite and PostgreSQL.

Rows are bulk-inserted with SQLAlchemy Core (decisions, one ledger row each, an approval request for every
REQUIRE_APPROVAL decision) under three policy versions, at most SEED decisions; a larger count (a multiple of
SEED) is reached by copying those rows inside the database (`replicate`: new ids, idempotency keys and ledger
sequence numbers, the same timestamps and documents), so seeding 1 000 000 takes a minute or two instead of
most of an hour. Seeding is not measured. With several counts (`--decisions 100000 1000000`) each database is
seeded once and grown between runs.

Each figure is printed beside its target and a same-run baseline: the time to read the same rows (the three
streams' filters, all columns) with the driver alone and write them with the csv module, no signing, no
hashing. A `valdrix serve` process serves the export; its RSS (anonymous, and with mapped files) is sampled
from /proc while the archive streams and its CPU seconds (user + system, all threads) are read from /proc
around each request, because wall times on a shared host are noisy. Targets (issue 21): archive <= 3x
baseline and <= 5 s for 100 000 decisions, <= 60 s and RSS growth <= 100 MiB for 1 000 000; first byte <= 1 s
whatever the window; parity <= 2 s; offline verify of the 100 000 archive <= 3 s. The exit status only says
whether every archive verified and parity held (timings on a shared machine are not a pass/fail signal).

Run:  PYTHONPATH=$PWD .venv/bin/python bench/export.py [--decisions 100000 [1000000]] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.string import TextLoader
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

from bench.host import reference_loop_ms
from tests.live import make_tenant
from tests.pg import create_database, free_port, postgres_cluster
from valdrix.approvals.models import ApprovalRequest
from valdrix.approvals.tokens import generate_key_file
from valdrix.audit.verify import verify
from valdrix.canonical import sha256_hex
from valdrix.config import Settings
from valdrix.db import make_engine
from valdrix.decisions.lineage import seal
from valdrix.decisions.models import Decision
from valdrix.ledger.models import LedgerEntry
from valdrix.migrate import upgrade
from valdrix.policies.models import PolicyVersion
from valdrix.policies.schemas import SCHEMA_VERSION, PolicyDocument

BATCH = 5000
# The most decisions generated row by row; larger counts are copies of these (see `replicate`).
SEED = 100_000
# Copy k of a row gets this hex digit in its UUIDs' version nibble: originals are uuid4 (digit 4), so copies
# can never collide with them or with each other.
COPY_MARKS = "012356789abcdef"
PROJECTS = [f"project-{i:02d}" for i in range(20)]
RESOURCES = ["module.db.aws_db_instance.main", "module.web.aws_instance.app", "module.cache.aws_elasticache_cluster.c",
             "module.k8s.kubernetes_deployment.api", "module.queue.aws_sqs_queue.jobs"]


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process `pid` has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Return the live processes started by `pid` and by them (the server's export formatting processes)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def family_cpu(pid: int) -> tuple[float, float]:
    """Return the CPU seconds of `pid` and of its live descendants."""
    others = 0.0
    for child in descendants(pid):
        with suppress(OSError):  # ended meanwhile
            others += cpu_seconds(child)
    return cpu_seconds(pid), others


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Return a process's resident memory (KiB): all of it (VmRSS), or its anonymous part (RssAnon), which
    leaves out pages of mapped files (on SQLite, the database file read through its memory map)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


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
            fingerprint = sha256_hex(request)
            decision_id = uuid.uuid4()
            approval_id = uuid.uuid4() if verdict == "REQUIRE_APPROVAL" else None
            decisions.append({
                "id": decision_id, "tenant_id": tenant_id, "source": "terraform", "environment": "nonprod",
                "project_id": project, "action": "terraform.apply", "resource_reference": resource,
                "decision": verdict, "reason_codes": reasons, "mode": mode, "fail_safe": False, "dry_run": False,
                "policy_version": version, "policy_sha256": sha, "request_fingerprint": fingerprint,
                "idempotency_key": f"terraform:run-{i}:pre_apply", "estimated_monthly_delta_usd": monthly,
                "estimated_hourly_delta_usd": (monthly / 730).quantize(Decimal("0.000001")),
                "budget_scope": project, "reserved_allocation_usd": monthly if active else Decimal(0),
                "reserved_credit_usd": Decimal(0), "reservation_active": active,
                "approval_request_id": approval_id, "request_payload": request, "response_payload": response,
                "computed_context": context, **seal(context), "created_by": None, "created_at": now,
                "updated_at": now})
            ledger.append({
                "id": uuid.uuid4(), "tenant_id": tenant_id, "decision_id": decision_id, "event": "decision_created",
                "source": "terraform", "environment": "nonprod", "project_id": project, "decision": verdict,
                "reason_codes": reasons, "policy_version": version, "policy_sha256": sha,
                "request_fingerprint": fingerprint, "estimated_monthly_delta_usd": monthly,
                "estimated_hourly_delta_usd": (monthly / 730).quantize(Decimal("0.000001")),
                "reserved_total_usd": monthly if active else Decimal(0), "reservation_active": active,
                "approval_request_id": approval_id, "request_payload_sha256": fingerprint,
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
    settle(engine)
    engine.dispose()


def settle(engine: Any) -> None:
    """Bring the seeded tables to the state a running database keeps them in: statistics, and on PostgreSQL the
    visibility map autovacuum maintains. Rows copied a moment ago and not yet vacuumed make PostgreSQL count the
    window's decisions (before an archive's first byte) by reading the whole table: a parallel sequential scan
    of 0.6 s for 1 000 000, against 0.15 s from the index alone once vacuumed."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")


def replicate(url: str, tenant_id: uuid.UUID, count: int) -> None:
    """Grow the tenant's SEED decisions (with their ledger rows and approvals) to `count` by copying them."""
    copies = count // SEED - 1
    if count % SEED or copies > len(COPY_MARKS):
        raise SystemExit(f"counts above {SEED} must be a multiple of it, at most {SEED * (len(COPY_MARKS) + 1)}")
    engine = make_engine(Settings(database_url=url))
    postgresql = engine.dialect.name == "postgresql"

    def marked(column: str) -> str:
        # Replace the version nibble of a UUID (NULL stays NULL).
        if postgresql:
            return f"CAST(substr(CAST({column} AS text), 1, 14) || :mark || substr(CAST({column} AS text), 16) AS uuid)"
        return f"substr({column}, 1, 12) || :mark || substr({column}, 14)"

    tables: list[tuple[Any, dict[str, str], str]] = [
        (Decision.__table__, {"id": marked("id"), "approval_request_id": marked("approval_request_id"),
                              "idempotency_key": "idempotency_key || '#' || :mark"}, "idempotency_key NOT LIKE '%#%'"),
        (ApprovalRequest.__table__, {"id": marked("id"), "decision_id": marked("decision_id")},
         "decision_id IN (SELECT id FROM decisions WHERE tenant_id = :tenant AND idempotency_key NOT LIKE '%#%')"),
        (LedgerEntry.__table__, {"id": marked("id"), "decision_id": marked("decision_id"),
                                 "approval_request_id": marked("approval_request_id")}, "seq <= :last_seq"),
    ]
    tenant = tenant_id if postgresql else tenant_id.hex
    with engine.begin() as conn:
        current = conn.exec_driver_sql("SELECT count(*) FROM decisions").scalar_one()
        last_seq = conn.exec_driver_sql("SELECT max(seq) FROM decision_ledger").scalar_one()
    if current != SEED:
        raise SystemExit(f"replicate expects {SEED} seeded decisions, found {current}")
    for mark in COPY_MARKS[:copies]:
        with engine.begin() as conn:
            for table, changed, originals in tables:
                names = [c.name for c in table.columns if c.name != "seq"]
                sql = (f"INSERT INTO {table.name} ({', '.join(names)}) SELECT "
                       f"{', '.join(changed.get(n, n) for n in names)} FROM {table.name} "
                       f"WHERE tenant_id = :tenant AND {originals}")
                conn.execute(text(sql), {"mark": mark, "tenant": tenant, "last_seq": last_seq})
    settle(engine)
    engine.dispose()


# The three streams' filters, all columns, as the export selects them (the baseline reads exactly these rows).
BASELINE_QUERIES = (
    "SELECT d.* FROM decisions d WHERE d.tenant_id = {t} AND d.created_at >= {s} AND d.created_at < {e} "
    "ORDER BY d.created_at, d.id",
    "SELECT a.* FROM approval_requests a JOIN decisions d ON d.id = a.decision_id WHERE d.tenant_id = {t} "
    "AND d.created_at >= {s} AND d.created_at < {e} ORDER BY a.created_at, a.id",
    "SELECT l.* FROM decision_ledger l JOIN decisions d ON d.id = l.decision_id WHERE d.tenant_id = {t} "
    "AND d.created_at >= {s} AND d.created_at < {e} ORDER BY l.seq",
)
WINDOW = {"start": "2026-01-01", "end": "2026-01-31"}
WINDOW_BOUNDS = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def baseline(url: str, tenant_id: uuid.UUID, out: Path) -> tuple[float, int]:
    """Return (seconds, rows) to read the export's rows with the bare driver and write them as CSV files."""
    began = time.monotonic()
    rows = 0
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(make_url(url).database or "")
        args: tuple[Any, ...] = (tenant_id.hex, WINDOW_BOUNDS[0].strftime("%Y-%m-%d %H:%M:%S.%f"),
                                 WINDOW_BOUNDS[1].strftime("%Y-%m-%d %H:%M:%S.%f"))
        marks = {"t": "?", "s": "?", "e": "?"}
    else:
        conn = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        # JSON columns are read as their text, as SQLite hands them back and as a CSV holds them; psycopg's
        # default would parse each into a dict, only for the csv module to write its Python repr.
        for name in ("json", "jsonb"):
            conn.adapters.register_loader(name, TextLoader)
        args = (tenant_id, *WINDOW_BOUNDS)
        marks = {"t": "%s", "s": "%s", "e": "%s"}
    try:
        for n, sql in enumerate(BASELINE_QUERIES):
            with (out / f"baseline-{n}.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\r\n")
                cursor = conn.cursor(name=f"b{n}") if isinstance(conn, psycopg.Connection) else conn.cursor()
                cursor.execute(sql.format(**marks), args)
                writer.writerow([c[0] for c in cursor.description or ()])
                while batch := cursor.fetchmany(2000):
                    writer.writerows(batch)
                    rows += len(batch)
                cursor.close()
    finally:
        conn.close()
    return time.monotonic() - began, rows


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """Yield the URL of a fresh, migrated database of `backend`."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        yield url
        return
    with postgres_cluster() as cluster:
        url = create_database(cluster, "valdrix_bench")
        upgrade(url)
        yield url


def verdict(value: float, limit: float, unit: str) -> str:
    return f"target <= {limit:g}{unit}: {'met' if value <= limit else 'MISSED'}"


def verdict_at_100k(value: float, limit: float, count: int) -> str:
    """Return the verdict of a target the issue sets for 100 000 decisions only (parity, offline verify)."""
    if count != 100_000:
        return f"target <= {limit:g} s is for 100 000 decisions"
    return f"{verdict(value, limit, ' s')} for 100 000"


def measure(backend: str, url: str, tmp: Path, tenant: Any, count: int) -> bool:
    """Run the baseline, then archive, parity and offline verify against a fresh server; print each figure."""
    tag = f"[{backend} {count}]"
    cpu_began = time.process_time()
    base_seconds, base_rows = baseline(url, tenant.id, tmp)
    print(f"{tag} baseline (driver read + csv write of {base_rows} rows): {base_seconds:.2f} s "
          f"({time.process_time() - cpu_began:.2f} s CPU in the reading process)")
    keys = tmp / "keys"
    if not keys.exists():
        generate_key_file(keys, "bench")
    port = free_port()
    env = {**os.environ, "VALDRIX_DATABASE_URL": url, "VALDRIX_PORT": str(port),
           "VALDRIX_SIGNING_KEYS_DIR": str(keys), "VALDRIX_SIGNING_ACTIVE_KID": "bench"}
    proc = subprocess.Popen([sys.executable, "-m", "valdrix", "serve", "--no-migrate"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp / "archive.zip"
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {tenant.owner_key}"}, timeout=None)
        for _ in range(300):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # Warm the export code paths on an empty window, so neither measurement pays for imports.
        client.get("/api/v1/enforcement/exports/parity", params={"start": "2020-01-01", "end": "2020-01-02"})
        client.get("/api/v1/enforcement/exports/archive", params={"start": "2020-01-01", "end": "2020-01-02"})
        rss_before = peak = rss_kib(proc.pid)
        anon_before = anon_peak = rss_kib(proc.pid, "RssAnon")
        helpers_peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, anon_peak, helpers_peak
            while not done.is_set():
                peak = max(peak, rss_kib(proc.pid))
                anon_peak = max(anon_peak, rss_kib(proc.pid, "RssAnon"))
                with suppress(OSError, RuntimeError):
                    helpers_peak = max(helpers_peak, sum(rss_kib(child) for child in descendants(proc.pid)))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        server_cpu, helpers_cpu = family_cpu(proc.pid)
        began = time.monotonic()
        first_byte = None
        with client.stream("GET", "/api/v1/enforcement/exports/archive", params=WINDOW) as response, \
                out.open("wb") as handle:
            response.raise_for_status()
            for chunk in response.iter_raw():
                if first_byte is None:
                    first_byte = time.monotonic() - began
                handle.write(chunk)
        archive_seconds = time.monotonic() - began
        archive_cpu, archive_helpers = (after - before for after, before in zip(family_cpu(proc.pid),
                                                                                (server_cpu, helpers_cpu), strict=True))
        done.set()
        sampler.join()
        server_cpu, helpers_cpu = family_cpu(proc.pid)
        began = time.monotonic()
        parity = client.get("/api/v1/enforcement/exports/parity", params=WINDOW).json()
        parity_seconds = time.monotonic() - began
        parity_cpu, parity_helpers = (after - before for after, before in zip(family_cpu(proc.pid),
                                                                              (server_cpu, helpers_cpu), strict=True))
        jwks = client.get("/.well-known/jwks.json").json()
    finally:
        proc.terminate()
        proc.wait(10)
    # The verifier parses in child processes: their CPU counts too (the server was waited for above).
    cpu_began, began = time.process_time() + children_cpu(), time.monotonic()
    report = verify(out, jwks)
    verify_seconds, verify_cpu = time.monotonic() - began, time.process_time() + children_cpu() - cpu_began
    large = count >= 1_000_000
    limit = 60 if large else 5
    print(f"{tag} archive: {archive_seconds:.2f} s ({verdict(archive_seconds, limit, ' s')} for "
          f"{'1 000 000' if large else '100 000'}) = {archive_seconds / base_seconds:.2f}x baseline "
          f"({verdict(archive_seconds / base_seconds, 3, 'x')}); server CPU {archive_cpu:.2f} s + formatting "
          f"processes {archive_helpers:.2f} s; "
          f"{out.stat().st_size / 2**20:.1f} MiB zip")
    print(f"{tag} first byte: {first_byte or 0:.3f} s ({verdict(first_byte or 0, 1, ' s')})")
    growth = (anon_peak - anon_before) / 1024
    print(f"{tag} server RSS: anonymous {anon_before / 1024:.1f} MiB before, peak {anon_peak / 1024:.1f} MiB, growth "
          f"{growth:.1f} MiB ({verdict(growth, 100, ' MiB')}); with mapped files (SQLite's database map, at most "
          f"VALDRIX_SQLITE_MMAP_MB) {rss_before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB; formatting "
          f"processes peak {helpers_peak / 1024:.1f} MiB")
    print(f"{tag} parity: {parity_seconds:.2f} s ({verdict_at_100k(parity_seconds, 2, count)}) = "
          f"{parity_seconds / base_seconds:.2f}x baseline; server CPU {parity_cpu:.2f} s + formatting processes "
          f"{parity_helpers:.2f} s "
          f"(parity_ok={parity['parity_ok']}, decisions={parity['decision_count_exported']}, "
          f"approvals={parity['approval_count_exported']}, ledger={parity['ledger_count_exported']})")
    print(f"{tag} offline verify: {verify_seconds:.2f} s ({verdict_at_100k(verify_seconds, 3, count)}) = "
          f"{verify_seconds / base_seconds:.2f}x baseline; CPU {verify_cpu:.2f} s "
          f"({'VERIFIED' if report.ok else report.problems()[:5]})")
    return report.ok and parity["parity_ok"] and parity["decision_count_exported"] == count


def children_cpu() -> float:
    """Return the CPU seconds of this process's waited-for child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(backend: str, counts: list[int]) -> bool:
    with tempfile.TemporaryDirectory(prefix="valdrix-bench-") as tmp_name, database(backend, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        tenant = make_tenant(Settings(database_url=url), "")
        ok = True
        for n, count in enumerate(counts):
            began = time.monotonic()
            if n == 0:
                populate(url, tenant.id, min(count, SEED), datetime(2026, 1, 5, tzinfo=UTC))
            if count > SEED:
                replicate(url, tenant.id, count)
            print(f"[{backend} {count}] seeded {count} decisions (+ledger, approvals) in "
                  f"{time.monotonic() - began:.1f} s (not measured)")
            ok = measure(backend, url, tmp, tenant, count) and ok
        return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, nargs="+", default=[100_000],
                        help=f"ascending counts; the first at most {SEED} or a multiple of it, the rest multiples")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    counts = sorted(args.decisions)
    if len(counts) > 1 and counts[0] != SEED:
        parser.error(f"with several counts the first must be {SEED}")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average, {os.cpu_count()} cores); host reference loop "
          f"{reference_loop_ms():.0f} ms (bench/host.py)")
    ok = all([run(backend, counts) for backend in (("sqlite", "postgresql") if args.backend == "both"
                                                   else (args.backend,))])
    print(f"load after: {os.getloadavg()[0]:.2f}; host reference loop {reference_loop_ms():.0f} ms")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
