"""Settings from `VALDRIX_*` environment variables (documented in the README)."""

from __future__ import annotations

import math
import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Return how many CPUs this process can keep busy, at least 1: those it may run on, or fewer when its cgroup's
    CPU quota (a container's CPU limit, such as a Kubernetes pod's) allows less time than that.

    A pod limited to one CPU on a large node still sees all the node's cores: processes started for them would
    share the one CPU's time and hold the memory of each.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        cpus = os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota)) if quota is not None else cpus)


def _export_processes_for(cpus: int) -> int:
    """Return the default number of export formatting processes for a server that can keep `cpus` CPUs busy: one
    per CPU, at most 4, and none on a single CPU, where a process could only share that CPU's time.

    Not one fewer than the CPUs: the server process's own part of an export (reading SQLite's rows, hashing,
    deflating, sending) is bound by its interpreter lock and leaves part of a core idle, which a process per CPU
    fills (docs/exports.md, Performance).
    """
    return min(4, cpus) if cpus > 1 else 0


def _cpu_quota(cgroup: Path) -> float | None:
    """Return the CPUs' worth of time the cgroup mounted at `cgroup` allows per period (None: no quota)."""
    try:  # cgroup v2: "<quota> <period>", or "max <period>"
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 is none
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


class Settings(BaseSettings):
    """All runtime settings; every field maps to `VALDRIX_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="VALDRIX_", extra="ignore")

    database_url: str = "sqlite:///./valdrix.db"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(default=1, ge=1, le=64)
    # Threads per worker process for blocking (database) work; see valdrix/serving.py.
    worker_threads: int = Field(default=4, ge=1, le=200)
    # Gate decisions a worker process runs at once (more while some wait for locks); see valdrix/gatepool.py.
    gate_concurrency: int = Field(default=1, ge=1, le=200)
    # HTTPS listener (admission webhook); both files must be set to enable it.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_port: int = 8443
    tls_client_ca_file: Path | None = None
    tls_serve_http: bool = True

    gate_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    # How much of the SQLite file each connection reads through a memory map instead of read() calls (0: none).
    sqlite_mmap_mb: int = Field(default=1024, ge=0, le=1024 * 1024)

    # Admission webhook authentication (see docs/admission-threat-model.md). Off unless set.
    admission_cluster_tenant: str | None = None
    # JSON object: verified client-certificate subject CN -> tenant name (mTLS from the API server).
    admission_mtls_tenants: dict[str, str] = Field(default_factory=dict)
    # JSON objects: namespace -> project id / environment, consulted when the object carries no valdrix.io label.
    admission_namespace_projects: dict[str, str] = Field(default_factory=dict)
    admission_namespace_environments: dict[str, str] = Field(default_factory=dict)
    # The whole admission answer must fit inside the webhook's timeoutSeconds (default 2 s): keep this below it.
    admission_timeout_seconds: float = Field(default=1.5, gt=0, le=29)
    # How long a verified admission credential is trusted without a database lookup (revocation lag).
    admission_auth_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    k8s_price_book_file: Path | None = None
    k8s_cluster_name: str = "default"

    # Signing key ring (Ed25519 PEM files named <kid>.pem); the active one signs, all listed ones verify.
    signing_keys_dir: Path | None = None
    signing_active_kid: str | None = None
    token_algorithm: str = "EdDSA"
    token_hs256_secret: str | None = None
    token_issuer: str = "valdrix-gate"
    token_audience: str = "valdrix-enforcement-consume"

    # Audit exports: no table stream of an archive may exceed this many rows (larger windows get 422).
    export_max_rows: int = Field(default=1_000_000, ge=1)
    # Processes per server process that format export batches beside the request's thread (0: in-process only;
    # valdrix/audit/processes.py). Default: one per CPU this process may use, at most 4, none on one CPU.
    export_processes: int = Field(default_factory=lambda: _export_processes_for(usable_cpus()), ge=0, le=64)
    # Reservations older than this are released in full by the overdue sweep (docs/reconciliation.md).
    reservation_sla_seconds: int = Field(default=86400, ge=60, le=604800)
    # A reconciliation is `matched` when |actual - reserved| <= max(tolerance_usd, tolerance_percent % of reserved).
    reconciliation_tolerance_usd: Decimal = Field(default=Decimal("0.01"), ge=0, le=1000000)
    reconciliation_tolerance_percent: Decimal = Field(default=Decimal("1"), ge=0, le=100)
    reconcile_sweep_limit: int = Field(default=500, ge=1, le=1000)
    # The worker: how often each replica looks for due jobs, how often the sweeps run, and the lease that
    # keeps replicas from running one job twice (it must outlast a run).
    worker_tick_seconds: float = Field(default=15.0, gt=0, le=3600)
    reconcile_interval_seconds: int = Field(default=300, ge=10, le=86400)
    approval_expiry_interval_seconds: int = Field(default=60, ge=10, le=86400)
    job_lease_seconds: int = Field(default=600, ge=10, le=86400)
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # Budget scopes exported as metrics (the most utilised first); bounds the series count (valdrix/budgets/metrics.py).
    metrics_budget_scopes: int = Field(default=50, ge=0, le=1000)
    # Actual spend in decisions: off (read only for policies with budget_basis=forecast), observe (always read,
    # reported in computed_context), required (missing, stale or unreadable data fails per mode).
    cost_context: Literal["off", "observe", "required"] = "off"
    cost_data_max_age_days: int = Field(default=3, ge=0, le=62)

    # Notifications (valdrix/notifications): how often the worker looks for due deliveries, the HTTP timeout of
    # one attempt, the retry schedule (base·2^(n-1) capped, with jitter, then dead), the per-delivery lease (it
    # must outlast a claimed batch of attempts), and the budget utilisation percentages that raise an event.
    notification_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    notification_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    notification_backoff_seconds: float = Field(default=10.0, gt=0, le=3600)
    notification_backoff_cap_seconds: float = Field(default=3600.0, gt=0, le=86400)
    notification_max_attempts: int = Field(default=8, ge=1, le=50)
    notification_lease_seconds: float = Field(default=120.0, gt=0, le=3600)
    budget_alert_thresholds: list[int] = Field(default_factory=lambda: [80, 100])

    # How long a console sign-in lasts (the session also ends at sign-out or when its API key is revoked).
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)

    # HCP Terraform run tasks (docs/terraform-cloud.md): how often the worker looks for queued requests, how long
    # one worker may hold one, the callback retry backoff (doubling from the base, at most 60 s), the HTTP
    # timeout towards HCP Terraform and the largest plan JSON it downloads.
    run_task_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    run_task_lease_seconds: int = Field(default=120, ge=10, le=3600)
    run_task_retry_base_seconds: float = Field(default=2.0, gt=0, le=60)
    run_task_http_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    run_task_max_plan_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    public_url: str = "http://127.0.0.1:8080"
    bootstrap_tenant: str = "default"
    log_level: str = "info"
    access_log: bool = False

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        if not (value.startswith("sqlite") or value.startswith("postgresql+psycopg://")):
            raise ValueError("VALDRIX_DATABASE_URL must be sqlite:///… or postgresql+psycopg://…")
        return value

    @field_validator("budget_alert_thresholds")
    @classmethod
    def _percentages(cls, value: list[int]) -> list[int]:
        if any(p < 1 or p > 1000 for p in value):
            raise ValueError("VALDRIX_BUDGET_ALERT_THRESHOLDS: percentages between 1 and 1000")
        return sorted(set(value))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def lock_timeout_seconds(self) -> float:
        """Return the lock wait bound, kept below the overall gate deadline."""
        return max(0.05, min(self.gate_timeout_seconds * 0.6, 5.0))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
