"""`valdrix key create|list|revoke`."""

from __future__ import annotations

import uuid

import typer
from rich.console import Console
from rich.table import Table

from valdrix.auth import service as auth
from valdrix.cli.session import db_session
from valdrix.clock import SystemClock

app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
console = Console(stderr=True)


@app.command("create")
def create(
    tenant: str = typer.Option(..., help="Tenant name or id."),
    name: str = typer.Option(..., help="Principal name (created if new)."),
    role: str = typer.Option("member", help="owner, admin or member."),
    permission: list[str] = typer.Option([], "--permission", help="approve:prod and/or approve:nonprod."),
) -> None:
    """Create an API key for a principal and print it once."""
    now = SystemClock().now()
    with db_session() as session:
        row = auth.get_tenant(session, tenant)
        principal = auth.ensure_principal(session, row.id, name, role=role, permissions=permission, now=now)
        key_row, key = auth.issue_key(session, principal, now=now)
    console.print(f"key {key_row.id} for {name!r} ({principal.role}) created (shown once):")
    print(key)


@app.command("list")
def list_keys(tenant: str = typer.Option(..., help="Tenant name or id.")) -> None:
    """List a tenant's keys (prefixes only; keys are never stored)."""
    with db_session() as session:
        rows = auth.list_keys(session, auth.get_tenant(session, tenant).id)
    table = Table("id", "prefix", "principal", "role", "permissions", "created", "revoked")
    for column in table.columns:
        column.overflow = "fold"  # ids must stay whole (and copyable) in narrow or non-terminal output
        column.no_wrap = False
    for key, principal in rows:
        table.add_row(str(key.id), key.prefix + "…", principal.name, principal.role,
                      ",".join(principal.permissions), key.created_at.isoformat(timespec="seconds"),
                      key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "")
    Console(width=max(Console().width, 160)).print(table)


@app.command("revoke")
def revoke(key_id: uuid.UUID) -> None:
    """Revoke a key: every later request with it gets 401."""
    with db_session() as session:
        auth.revoke_key(session, key_id, now=SystemClock().now())
    console.print(f"key {key_id} revoked")
