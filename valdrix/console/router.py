"""Console pages under /console: server-rendered, no scripts, a strict Content-Security-Policy, forms with CSRF
tokens, and the same services (and so the same permissions) as the API."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from valdrix.approvals import service as approvals
from valdrix.approvals.models import ApprovalRequest
from valdrix.console import service
from valdrix.db import transaction
from valdrix.decisions import service as decisions
from valdrix.decisions.explain import explain, reason_text
from valdrix.decisions.router import decode_cursor, encode_cursor
from valdrix.deps import ClockDep, IdsDep, SettingsDep, WriteDB, WritingRoute, get_keyring
from valdrix.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, ValdrixError
from valdrix.money import monthly
from valdrix.policies import service as policies
from valdrix.simulation import router as simulation
from valdrix.simulation.schemas import SimulationRequest

router = APIRouter(prefix="/console", include_in_schema=False, route_class=WritingRoute)
STATIC = Path(__file__).parent / "static"
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["usd"] = lambda v: "—" if v is None else f"${monthly(Decimal(str(v))):,.2f}"
templates.env.filters["reason"] = reason_text

# No script runs on these pages, nothing is loaded from elsewhere, and no other site may frame or post to them.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
LOGIN_CSRF = "valdrix_console_login"
HISTORY_STATUSES = ("pending", "approved", "consumed", "denied", "expired", "revoked")


async def form(request: Request) -> dict[str, str]:
    """Return the posted urlencoded form (one value per field)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


Form = Annotated[dict[str, str], Depends(form)]


def page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """Render a page with the console's security headers."""
    response = templates.TemplateResponse(request, template, context, status_code=status)
    _secure(response)
    return response


def _secure(response: Response) -> None:
    response.headers["content-security-policy"] = CSP
    response.headers["x-frame-options"] = "DENY"
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"


def _redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    _secure(response)
    return response


def _signed(request: Request, db: Session, now: datetime) -> service.Signed | None:
    return service.current(db, request.cookies.get(service.COOKIE), now=now)


def _login_redirect(request: Request) -> RedirectResponse:
    return _redirect("/console/login?" + urlencode({"next": request.url.path}))


def _ctx(signed: service.Signed, **values: Any) -> dict[str, Any]:
    return {"caller": signed.caller, "csrf": signed.csrf_token, **values}


@router.get("/login")
def login_form(request: Request, db: WriteDB, clock: ClockDep, next: str = "/console/approvals",
               error: str | None = None) -> Response:
    """Sign-in form: an API key is exchanged for a session."""
    if _signed(request, db, clock.now()) is not None:
        return _redirect(_safe_next(next))
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", {"csrf": token, "next": _safe_next(next), "error": error},
                    status=401 if error else 200)
    response.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict", path="/console",
                        secure=request.url.scheme == "https", max_age=900)
    return response


@router.post("/login")
def login(request: Request, fields: Form, db: WriteDB, clock: ClockDep, ids: IdsDep, settings: SettingsDep) -> Response:
    """Open a session: the cookie is HttpOnly, SameSite=Strict, Secure over TLS, and expires."""
    expected = request.cookies.get(LOGIN_CSRF)
    if not expected or not secrets.compare_digest(expected, fields.get("csrf", "")):
        return page(request, "error.html", {"status": 403, "message": "The form expired or did not come from this "
                                            "console. Reload the sign-in page and try again."}, status=403)
    next_url = _safe_next(fields.get("next", "/console/approvals"))
    try:
        cookie, signed = service.sign_in(db, fields.get("api_key", ""), now=clock.now(),
                                         lifetime_seconds=settings.console_session_seconds, session_id=ids.new())
    except Unauthenticated:
        return _redirect("/console/login?" + urlencode({"next": next_url, "error": "unknown or revoked API key"}))
    response = _redirect(next_url)
    response.set_cookie(service.COOKIE, cookie, httponly=True, samesite="strict", path="/console",
                        secure=request.url.scheme == "https", expires=signed.expires_at)
    response.delete_cookie(LOGIN_CSRF, path="/console")
    return response


@router.post("/logout")
def logout(request: Request, fields: Form, db: WriteDB, clock: ClockDep) -> Response:
    """Sign out: the session is revoked in the database, not only forgotten by the browser."""
    signed = _signed(request, db, clock.now())
    if signed is not None and not service.csrf_ok(signed, fields.get("csrf")):
        return _csrf_refused(request)
    service.sign_out(db, request.cookies.get(service.COOKIE), now=clock.now())
    response = _redirect("/console/login")
    response.delete_cookie(service.COOKIE, path="/console")
    return response


@router.get("")
def home() -> Response:
    return _redirect("/console/approvals")


@router.get("/approvals")
def queue(request: Request, db: WriteDB, clock: ClockDep, cursor: str | None = None) -> Response:
    """The pending queue the caller may review, oldest first."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    rows, position = approvals.queue(db, signed.caller, now=now, after=_cursor(cursor), limit=50)
    who = service.names(db, {a.requested_by or d.created_by for a, d in rows})
    items = [{"approval": a, "decision": d, "age": _age(now, a.created_at),
              "requester": who.get(a.requested_by or d.created_by)} for a, d in rows]
    return page(request, "queue.html", _ctx(signed, items=items, next_cursor=encode_cursor(*position)
                                            if position else None, nav="queue"))


@router.get("/approvals/history")
def history(request: Request, db: WriteDB, clock: ClockDep, status: str | None = None,
            project_id: Annotated[str | None, Query(max_length=128)] = None,
            environment: Annotated[str | None, Query(max_length=32)] = None, cursor: str | None = None) -> Response:
    """Every approval, newest first, filtered by status, project and environment."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    status = status if status in HISTORY_STATUSES else None
    rows, position = approvals.history(db, signed.caller.tenant_id, status=status, project_id=project_id or None,
                                       environment=environment or None, after=_cursor(cursor), limit=50)
    who = service.names(db, {x for a, d in rows for x in (a.requested_by or d.created_by, a.reviewed_by)})
    items = [{"approval": a, "decision": d, "state": _state(a), "requester": who.get(a.requested_by or d.created_by),
              "reviewer": who.get(a.reviewed_by) if a.reviewed_by else None} for a, d in rows]
    filters = {"status": status or "", "project_id": project_id or "", "environment": environment or ""}
    more = urlencode({**filters, "cursor": encode_cursor(*position)}) if position else None
    return page(request, "history.html", _ctx(signed, items=items, filters=filters, statuses=HISTORY_STATUSES,
                                              more=more, nav="history"))


@router.get("/approvals/{approval_id}")
def approval(request: Request, approval_id: uuid.UUID, db: WriteDB, clock: ClockDep,
             done: str | None = None) -> Response:
    """One approval: what it costs, resource by resource; the budget before and after; how it was routed."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    return _approval_page(request, db, signed, approval_id, now, done=done)


@router.post("/approvals/{approval_id}/{action}")
def review(request: Request, approval_id: uuid.UUID, action: str, fields: Form, db: WriteDB,
           clock: ClockDep) -> Response:
    """Approve, deny or revoke, with a reason; refusals are explained on the page."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    if not service.csrf_ok(signed, fields.get("csrf")):
        return _csrf_refused(request)
    notes = fields.get("notes", "").strip()[:1000] or None
    try:
        if action == "approve":
            approvals.approve(db, signed.caller, approval_id, notes=notes, now=now, keyring=get_keyring(request))
        elif action == "deny":
            approvals.deny(db, signed.caller, approval_id, notes=notes, now=now)
        elif action == "revoke":
            approvals.revoke(db, signed.caller, approval_id, notes=notes, now=now)
        else:
            raise NotFound("no such action", code="not_found")
    except (Forbidden, Conflict) as exc:
        if exc.commit:
            db.commit()  # e.g. an expiry found by the review stands even though the review is refused
        else:
            db.rollback()
        return _approval_page(request, db, signed, approval_id, now, error=exc, status=exc.status)
    return _redirect(f"/console/approvals/{approval_id}?done={action}")


@router.get("/decisions")
def decision_search(request: Request, db: WriteDB, clock: ClockDep, project_id: str | None = None,
                    environment: str | None = None, source: str | None = None, decision: str | None = None,
                    since: str | None = None, until: str | None = None, cursor: str | None = None) -> Response:
    """Decisions by project, environment, source, outcome and time, newest first."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    filters = {"project_id": project_id or "", "environment": environment or "", "source": source or "",
               "decision": decision or "", "since": since or "", "until": until or ""}
    error = None
    try:
        rows, position = decisions.search(db, signed.caller.tenant_id, source=source or None,
                                          decision=decision or None,
                                          project_id=(project_id or "").strip().lower() or None,
                                          environment=environment or None, since=_when(since), until=_when(until),
                                          after=_cursor(cursor), limit=50)
    except InvalidInput as exc:
        rows, position, error = [], None, exc.message
    more = urlencode({**filters, "cursor": encode_cursor(*position)}) if position else None
    return page(request, "decisions.html", _ctx(signed, rows=rows, filters=filters, more=more, error=error,
                                                nav="decisions"), status=422 if error else 200)


@router.get("/decisions/{decision_id}")
def decision_page(request: Request, decision_id: uuid.UUID, db: WriteDB, clock: ClockDep) -> Response:
    """One decision in words, with its policy hash and its ledger rows."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    try:
        found = decisions.get(db, signed.caller.tenant_id, decision_id)
    except NotFound:
        return page(request, "error.html", _ctx(signed, status=404, message="No such decision."), status=404)
    ledger = service.ledger_of(db, signed.caller.tenant_id, found.id)
    who = service.names(db, {found.created_by, *(e.actor for e in ledger)})
    return page(request, "decision.html", _ctx(signed, d=found, x=explain(found), ledger=ledger, who=who,
                                               nav="decisions"))


@router.get("/policy")
def policy_page(request: Request, db: WriteDB, clock: ClockDep) -> Response:
    """The policy in force, editable as JSON, with "what would this change do?" before anyone saves it."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    active = policies.current(db, signed.caller.tenant_id)
    document = json.dumps(active.document.model_dump(mode="json"), indent=2)
    return page(request, "policy.html", _ctx(signed, active=active, document=document, window_days=30,
                                             report=None, error=None, nav="policy"))


@router.post("/policy/simulate")
async def policy_simulate(request: Request, fields: Form, clock: ClockDep) -> Response:
    """Replay recorded decisions under the candidate in the form (admin, as `POST /policies/simulate`)."""
    now = clock.now()

    def read() -> tuple[service.Signed | None, Any]:
        with transaction(request.app.state.sessions) as db:
            signed = _signed(request, db, now)
            return signed, policies.current(db, signed.caller.tenant_id) if signed is not None else None

    signed, active = await run_in_threadpool(read)
    if signed is None:
        return _login_redirect(request)
    if not service.csrf_ok(signed, fields.get("csrf")):
        return _csrf_refused(request)
    document = fields.get("document", "")
    context = _ctx(signed, active=active, document=document, window_days=fields.get("window_days", "30"),
                   report=None, error=None, nav="policy")
    if not signed.caller.has_role("admin"):
        context["error"] = "Simulating a policy needs the admin role, as the API's POST /policies/simulate does."
        return page(request, "policy.html", context, status=403)
    try:
        candidate = SimulationRequest.model_validate({"policy": json.loads(document),
                                                      "window_days": int(fields.get("window_days", "30"))})
    except (ValueError, ValidationError) as exc:
        context["error"] = f"The candidate is not a valid policy: {exc}"
        return page(request, "policy.html", context, status=422)
    context["report"] = await simulation.run(request, signed.caller, candidate, now, via="console")
    return page(request, "policy.html", context)


@router.get("/budgets")
def budget_page(request: Request, db: WriteDB, clock: ClockDep, settings: SettingsDep) -> Response:
    """Limit, reserved, month-to-date spend and forecast per scope, with a bar each."""
    now = clock.now()
    signed = _signed(request, db, now)
    if signed is None:
        return _login_redirect(request)
    views = service.budget_views(db, signed.caller.tenant_id, now=now,
                                 max_age_days=settings.cost_data_max_age_days)
    return page(request, "budgets.html", _ctx(signed, budgets=views, nav="budgets"))


def _approval_page(request: Request, db: Session, signed: service.Signed, approval_id: uuid.UUID, now: datetime,
                   *, done: str | None = None, error: ValdrixError | None = None, status: int = 200) -> Response:
    try:
        a, d = approvals.get(db, signed.caller.tenant_id, approval_id, now=now)
    except NotFound:
        return page(request, "error.html", _ctx(signed, status=404, message="No such approval."), status=404)
    who = service.names(db, {a.requested_by, d.created_by, a.reviewed_by})
    context = d.computed_context or {}
    pricing = (d.request_payload.get("metadata") or {}).get("pricing") or {}
    reserved_before = _decimal(context.get("scope_reserved_usd"))
    budget = None
    if context.get("budget_scope") and context.get("budget_limit_usd") is not None and reserved_before is not None:
        budget = {"scope": context["budget_scope"], "limit": context["budget_limit_usd"], "before": reserved_before,
                  "after": reserved_before + (d.reserved_allocation_usd or 0)}
    return page(request, "approval.html", _ctx(
        signed, a=a, d=d, state=_state(a), age=_age(now, a.created_at), who=who, pricing=pricing, budget=budget,
        metadata=d.request_payload.get("metadata") or {}, done=done,
        error=_explain_refusal(error, a) if error else None, nav="queue"), status=status)


def _explain_refusal(error: ValdrixError, a: ApprovalRequest) -> str:
    why = {
        "requester_reviewer_separation": "Separation of duties: whoever asked for this change cannot review it; "
                                         "another reviewer must.",
        "approval_permission_missing": f"Reviewing this request needs the '{a.required_permission}' permission "
                                       f"(routing rule '{a.routing_rule_id}'); an owner can grant it to your key.",
        "reviewer_role_not_allowed": f"Routing rule '{a.routing_rule_id}' lets only "
                                     f"{', '.join(a.routing.get('allowed_reviewer_roles', []))} review it.",
    }.get(error.code)
    return f"{error.message}. {why}" if why else error.message


def _csrf_refused(request: Request) -> Response:
    return page(request, "error.html", {"status": 403, "message": "This form did not carry its security token "
                                        "(CSRF). Reload the page and submit it again."}, status=403)


def _state(a: ApprovalRequest) -> str:
    return "consumed" if a.token_consumed_at is not None else a.status


def _age(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def _cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    try:
        return decode_cursor(cursor) if cursor else None
    except InvalidInput:
        return None


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"'{value}' is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except ArithmeticError:
        return None


def _safe_next(url: str) -> str:
    # Only a console path: never an open redirect to another site.
    return url if url.startswith("/console/") and not url.startswith("//") and "\\" not in url else "/console/approvals"

