"""GET /exports/parity and /exports/archive: signed audit exports of a window of decisions (admin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

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

_LIMIT_CODES = {"export_window_too_large", "export_too_many_rows"}
T = TypeVar("T")
_EXPORT_PROBLEMS = problems({422: ("invalid_export_window", "export_window_too_large", "export_too_many_rows"),
                             503: ("signing_keys_unavailable", "export_signing_unavailable",
                                   "export_process_failed")})


def _counted(artifact: str, build: Callable[[], T], *, done: bool = True) -> T:
    """Return `build()`, counting a refusal or error under `artifact`, and success too when `done`."""
    try:
        result = build()
    except InvalidInput as exc:
        EXPORT_EVENTS.labels(artifact, "rejected_limit" if exc.code in _LIMIT_CODES else "error").inc()
        raise
    except Exception:
        EXPORT_EVENTS.labels(artifact, "error").inc()
        raise
    if done:
        EXPORT_EVENTS.labels(artifact, "success").inc()
    return result


def _metered(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Stream `chunks`, counting the archive once its last byte is produced, or its failure mid-stream (a row
    limit an approval or ledger stream passes counts as a refusal)."""
    try:
        yield from chunks
    except InvalidInput as exc:
        EXPORT_EVENTS.labels("archive", "rejected_limit" if exc.code in _LIMIT_CODES else "error").inc()
        raise
    except Exception:
        EXPORT_EVENTS.labels("archive", "error").inc()
        raise
    EXPORT_EVENTS.labels("archive", "success").inc()


@router.get("/parity", response_model=ParityOut, responses=_EXPORT_PROBLEMS)
def parity(request: Request, caller: Admin, clock: ClockDep, settings: SettingsDep, keyring: KeyRingDep,
           start: Day | None = None, end: Day | None = None) -> JSONResponse:
    """Return counts (database vs exported) and both lineages of the window, from one snapshot, signed."""

    def build() -> service.Parity:
        win = service.window(start, end, clock.now().date())
        return service.parity(request.app.state.engine, caller.tenant_id, win, max_rows=settings.export_max_rows,
                              signer=keyring)

    result = _counted("parity", build)
    return JSONResponse({**result.summary, "summary_sha256": result.summary_sha256,
                         "signature": result.signature_b64})


@router.get("/archive", response_class=StreamingResponse, responses={
    200: {"description": "The signed export archive",
          "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
    **_EXPORT_PROBLEMS})
def archive(request: Request, caller: Admin, clock: ClockDep, settings: SettingsDep, keyring: KeyRingDep,
            start: Day | None = None, end: Day | None = None) -> StreamingResponse:
    """Stream the ZIP of decisions.csv, approvals.csv, ledger.csv, policies.json, manifest.json, manifest.sig."""

    def build() -> tuple[Iterator[bytes], service.Window]:
        win = service.window(start, end, clock.now().date())
        chunks = service.archive(request.app.state.engine, caller.tenant_id, win,
                                 max_rows=settings.export_max_rows, signer=keyring, pool=request.app.state.export_pool)
        return chunks, win

    chunks, win = _counted("archive", build, done=False)
    name = f"valdrix-export-{caller.tenant_id}-{win.start.isoformat()}-{win.end.isoformat()}.zip"
    return StreamingResponse(_metered(chunks), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
