"""`valdrix tenant create`."""

from __future__ import annotations

import typer
from rich.console import Console

from valdrix.auth import service as auth
from valdrix.cli.session import db_session
from valdrix.clock import SystemClock

app = typer.Typer(no_args_is_help=True, help="Manage tenants.")
console = Console(stderr=True)


@app.command("create")
def create(name: str, owner: str = typer.Option("owner", help="Name of the tenant's first (owner) principal.")) -> None:
    """Create a tenant with an owner principal and print the owner's API key once."""
    now = SystemClock().now()
    with db_session() as session:
        tenant = auth.create_tenant(session, name, now=now)
        principal = auth.ensure_principal(session, tenant.id, owner, role="owner", permissions=list(auth.PERMISSIONS),
                                          now=now)
        _, key = auth.issue_key(session, principal, now=now)
    console.print(f"tenant {name!r} ({tenant.id}) created; owner key for {owner!r} (shown once):")
    print(key)
