"""The `valdrix` command: one Typer app per module, imported only when its command runs.

`valdrix --help` lists every command from the table below without importing a single command module, and
`valdrix preflight …` imports the preflight module and what it uses, nothing else; so the pipeline client
starts fast and never touches the server's modules (or needs the server's dependencies installed). To add a
command: write its module and add one `Command` row whose help line is the first paragraph of the command's own
help (its docstring, or its Typer app's `help`; a test checks).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from valdrix import __version__

# Options whose value may be left out, with the value a bare flag means (click has no optional option values).
DEFAULT_WAIT = "30m"
OPTIONAL_VALUES = {"--wait-for-approval": DEFAULT_WAIT}

CLIENT = "Pipelines and reviewers"
SERVER = "Server administration (pip install 'valdrix[server]')"


@dataclass(frozen=True)
class Command:
    """One top-level command: where it lives (`module:attribute`, a function or a Typer app) and its help line."""

    name: str
    target: str
    help: str
    panel: str


COMMANDS = (
    Command("preflight", "valdrix.cli.preflight:preflight",
            "Ask the gate whether a planned Terraform change may be applied; exit 0 only if it may.", CLIENT),
    Command("approve", "valdrix.cli.approvals:approve",
            "Approve a pending approval request (needs the approve:prod or approve:nonprod permission).", CLIENT),
    Command("deny", "valdrix.cli.approvals:deny", "Deny a pending approval request; the waiting pipeline exits 3.",
            CLIENT),
    Command("consume", "valdrix.cli.approvals:consume", "Consume an approval token against the persisted request "
            "binding; exit 0 only if the server accepts it.", CLIENT),
    Command("decisions", "valdrix.cli.records:decisions", "Search and explain decisions.", CLIENT),
    Command("approvals", "valdrix.cli.records:approvals", "The approval queue and its history.", CLIENT),
    Command("policy", "valdrix.cli.policy:app",
            "Policies: simulate a candidate against recorded decisions, or render the portable rules.", CLIENT),
    Command("serve", "valdrix.cli.server:serve",
            "Serve the API; on an empty database create the default tenant and print its owner key once.", SERVER),
    Command("migrate", "valdrix.cli.server:migrate", "Migrate the configured database to the newest schema.", SERVER),
    Command("worker", "valdrix.cli.worker:worker",
            "Run the periodic jobs, send notifications and work run tasks until stopped; safe on many replicas.",
            SERVER),
    Command("reconcile", "valdrix.cli.worker:reconcile", "Release overdue reservations: once (exit 1 on failure), "
            "or on the worker schedule until stopped.", SERVER),
    Command("tenant", "valdrix.cli.tenants:app", "Manage tenants.", SERVER),
    Command("key", "valdrix.cli.keys:app", "Manage API keys.", SERVER),
    Command("signing-key", "valdrix.cli.signing:app", "Manage approval-token signing keys.", SERVER),
    Command("export", "valdrix.cli.export:app", "Audit exports: verify an archive offline, or download one.", SERVER),
    Command("costs", "valdrix.cli.costs:app", "Import actual cost data.", SERVER),
)


def load(command: Command) -> Any:
    """Import the command's module and return it as a click command named `command.name`.

    Typed Any: Typer builds on click, or (newer releases) on its own copy of click; only Typer's names are used.
    """
    module, attribute = command.target.split(":")
    try:
        target: Any = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as exc:
        if command.panel != SERVER:
            raise
        # The client install (`pip install valdrix`) has none of the server's libraries.
        typer.echo(f"valdrix {command.name} is part of the server ({exc.name} is not installed): "
                   "pip install 'valdrix[server]'", err=True)
        raise SystemExit(1) from None
    loaded: Any
    if isinstance(target, typer.Typer):
        loaded = typer.main.get_group(target)  # a group even when it holds one command
    else:
        single = typer.Typer(add_completion=False)
        single.command(command.name)(target)
        loaded = typer.main.get_command(single)
    loaded.name = command.name
    return loaded


class _Listed(TyperCommand):
    """What `valdrix --help` lists for a command that has not been imported."""

    def __init__(self, command: Command) -> None:
        super().__init__(command.name, help=command.help, short_help=command.help, rich_help_panel=command.panel)
        self.command = command


class LazyGroup(TyperGroup):
    """A command group whose commands are imported when one is invoked, not when the group is built."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for command in COMMANDS:
            self.add_command(_Listed(command))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Listed):
            command = load(command.command)
        return name, command, rest


app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False,
                  help="Valdrix Gate: pre-provision cost enforcement.")


def _version(value: bool) -> None:
    if value:
        print(f"valdrix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Valdrix Gate: pre-provision cost enforcement."""


def optional_values(argv: list[str]) -> list[str]:
    """Return argv with each bare option of OPTIONAL_VALUES given its default (`--wait-for-approval` → 30m)."""
    result = list(argv)
    for i, arg in enumerate(result):
        if arg in OPTIONAL_VALUES and (i + 1 == len(result) or result[i + 1].startswith("-")):
            result[i] = f"{arg}={OPTIONAL_VALUES[arg]}"
    return result


def main() -> None:
    """Run the command line."""
    app(args=optional_values(sys.argv[1:]))
