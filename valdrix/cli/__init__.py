"""The `valdrix` command: one Typer app, one module per command group."""

from __future__ import annotations

import sys

import typer

from valdrix import __version__
from valdrix.cli import approvals, costs, export, keys, policy, preflight, records, server, signing, tenants, worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Valdrix Gate: pre-provision cost enforcement.")
server.register(app)
worker.register(app)
app.add_typer(tenants.app, name="tenant")
app.add_typer(keys.app, name="key")
app.add_typer(signing.app, name="signing-key")
app.add_typer(export.app, name="export")
app.add_typer(costs.app, name="costs")
app.add_typer(policy.app, name="policy")
app.command("preflight")(preflight.preflight)
approvals.register(app)
app.add_typer(records.decisions, name="decisions")
app.add_typer(records.approvals, name="approvals")


def _version(value: bool) -> None:
    if value:
        print(f"valdrix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Valdrix Gate: pre-provision cost enforcement."""


def main() -> None:
    """Run the command line."""
    app(args=preflight.optional_values(sys.argv[1:]))
