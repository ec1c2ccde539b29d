"""`valdrix signing-key generate|retire`: the Ed25519 key files approval tokens are signed with."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from valdrix.approvals.tokens import KeyRingError, generate_key_file, retire_key_file

app = typer.Typer(no_args_is_help=True, help="Manage approval-token signing keys.")
console = Console(stderr=True)


@app.command("generate")
def generate(
    directory: Path = typer.Option(..., "--dir", help="Key directory (VALDRIX_SIGNING_KEYS_DIR)."),
    kid: str | None = typer.Option(None, help="Key id; default ed25519-<date>-<random>."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the directory already holds a key."),
) -> None:
    """Write a new Ed25519 private key `<kid>.pem` (mode 0600) and print its kid."""
    if if_empty and directory.is_dir() and any(directory.glob("*.pem")):
        console.print(f"{directory} already holds signing keys; nothing generated")
        return
    kid = kid or f"ed25519-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    try:
        path = generate_key_file(directory, kid)
    except (KeyRingError, FileExistsError) as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"wrote {path}; activate it with VALDRIX_SIGNING_ACTIVE_KID={kid}")
    print(kid)


@app.command("retire")
def retire(
    directory: Path = typer.Option(..., "--dir", help="Key directory (VALDRIX_SIGNING_KEYS_DIR)."),
    kid: str = typer.Option(..., help="Key id to make verify-only."),
) -> None:
    """Replace a key's private PEM by its public key: it stops signing but tokens it signed still verify."""
    try:
        path = retire_key_file(directory, kid)
    except KeyRingError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{path} now holds only the public key of {kid!r}")
