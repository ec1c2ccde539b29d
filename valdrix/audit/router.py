"""GET /exports/parity and /exports/archive: signed audit exports of a window of decisions (admin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from valdrix.audit import service
from valdrix.audit.metrics import EXPORT_EVENTS
from valdrix.audit.schemas import ParityOut
from valdrix.clock import Day
from valdrix.deps import Admin, ClockDep, KeyRingDep, SettingsDep
from valdrix.errors import InvalidInput, problems
from valdrix.jsonio import JSONResponse

router = APIRouter(prefix="/api/v1/enforcement/exports", tags=["exports"])

CHUNK_BYTES = 64 * 1024
_LIMIT_CODES = {"export_window_too_large", "export_too_many_rows"}
T = TypeVar("T")
# Manifest count keys (archive member stems) → the parity response's field prefixes.
_NOUNS = {"decisions": "decision", "approvals": "approval", "ledger": "ledger"}
_EXPORT_PROBLEMS = problems({422: ("invalid_export_window", "export_window_too_large", "export_too_many_rows"),
                             503: ("signing_keys_unavailable",)})


def _counted(artifact: str, build: Callable[[], T]) -> T:
    """Return `build()`, counting its outcome under `artifact`."""
    try:
        result = build()
    except InvalidInput as exc:
        EXPORT_EVENTS.labels(artifact, "rejected_limit" if exc.code in _LIMIT_CODES else "error").inc()
        raise
    except Exception:
        EXPORT_EVENTS.labels(artifact, "error").inc()
        raise
    EXPORT_EVENTS.labels(artifact, "success").inc()
    return result


@router.get("/parity", response_model=ParityOut, responses=_EXPORT_PROBLEMS)
def parity(request: Request, caller: Admin, clock: ClockDep, settings: SettingsDep, keyring: KeyRingDep,
           start: Day | None = None, end: Day | None = None) -> JSONResponse:
    """Return counts (database vs exported), file hashes, both lineages and the signed manifest's digest."""

    def build() -> service.Export:
        win = service.window(start, end, clock.now().date())
        return service.parity(request.app.state.engine, caller.tenant_id, win, max_rows=settings.export_max_rows,
                              signer=keyring)

    result = _counted("parity", build)
    manifest = result.manifest
    body: dict[str, Any] = {"tenant_id": manifest["tenant_id"], "window": manifest["window"]}
    for stream, noun in _NOUNS.items():
        count = manifest["counts"].get(stream)
        if count is not None:
            body[f"{noun}_count_db"] = count["database"]
            body[f"{noun}_count_exported"] = count["exported"]
    for file, digest in manifest["files"].items():
        body[file.split(".")[0] + "_sha256"] = digest["sha256"]
    for field in ("policy_lineage", "policy_lineage_sha256", "computed_context_lineage",
                  "computed_context_lineage_sha256", "parity_ok"):
        body[field] = manifest[field]
    body.update(manifest_sha256=result.manifest_sha256, signature=result.signature_b64,
                signature_algorithm=manifest["signature"]["algorithm"], signature_kid=manifest["signature"]["kid"])
    return JSONResponse(body)


@router.get("/archive", response_class=StreamingResponse, responses={
    200: {"description": "The signed export archive",
          "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
    **_EXPORT_PROBLEMS})
def archive(request: Request, caller: Admin, clock: ClockDep, settings: SettingsDep, keyring: KeyRingDep,
            start: Day | None = None, end: Day | None = None) -> StreamingResponse:
    """Return the ZIP of decisions.csv, approvals.csv, ledger.csv, policies.json, manifest.json, manifest.sig."""

    def build() -> tuple[service.Export, IO[bytes], service.Window]:
        win = service.window(start, end, clock.now().date())
        result, spool = service.archive(request.app.state.engine, caller.tenant_id, win,
                                        max_rows=settings.export_max_rows,
                                        signer=keyring)
        return result, spool, win

    result, spool, win = _counted("archive", build)
    name = f"valdrix-export-{caller.tenant_id}-{win.start.isoformat()}-{win.end.isoformat()}.zip"
    return StreamingResponse(_chunks(spool), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "X-Valdrix-Manifest-Sha256": result.manifest_sha256})


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spool.read(CHUNK_BYTES):
            yield chunk
    finally:
        spool.close()
