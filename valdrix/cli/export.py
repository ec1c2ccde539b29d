"""`valdrix export verify|archive`: check an audit archive offline, or download one."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from valdrix.audit.verify import Report, verify
from valdrix.config import get_settings

app = typer.Typer(no_args_is_help=True, help="Audit exports: verify an archive offline, or download one.")
console = Console()


def load_jwks(source: str) -> dict[str, Any]:
    """Return the JWK Set read from a file path or fetched from an http(s) URL; raise ValueError if unusable."""
    try:
        if source.startswith(("http://", "https://")):
            response = httpx.get(source, timeout=30)
            response.raise_for_status()
            data = response.json()
        else:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, httpx.HTTPError, ValueError) as exc:
        raise ValueError(f"cannot load the JWKS from {source}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source} is not a JWK Set (an object with a 'keys' list)")
    return data


def render(report: Report) -> None:
    """Print the report as a table of checks with every discrepancy named."""
    table = Table("check", "result", "details", title=f"Audit archive {report.archive}")
    for check in report.checks:
        details = "\n".join(check.problems + ([f"… and {check.hidden} more"] if check.hidden else []))
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", details)
    console.print(table)
    if report.manifest is not None:
        manifest = report.manifest
        window = manifest.get("window", {})
        console.print(f"window {window.get('start')} .. {window.get('end')}, tenant {manifest.get('tenant_id')}, "
                      f"key {manifest.get('signature', {}).get('kid')}")
    console.print("[bold green]VERIFIED[/bold green]" if report.ok else
                  f"[bold red]NOT VERIFIED[/bold red]: {len(report.problems())} discrepancies")


@app.command("verify")
def verify_command(
    archive: Path = typer.Argument(..., help="The archive ZIP downloaded from /exports/archive."),
    jwks: str | None = typer.Option(None, "--jwks", help="JWKS file or URL (default: "
                                    "$VALDRIX_PUBLIC_URL/.well-known/jwks.json)."),
) -> None:
    """Verify an audit archive offline; exit 1 naming every discrepancy."""
    source = jwks or get_settings().public_url.rstrip("/") + "/.well-known/jwks.json"
    try:
        keys = load_jwks(source)
    except ValueError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    report = verify(archive, keys)
    render(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("archive")
def archive_command(
    out: Path = typer.Option(..., "--out", help="Where to write the ZIP."),
    server: str = typer.Option(None, "--server", help="Server URL (default $VALDRIX_PUBLIC_URL)."),
    api_key: str = typer.Option(..., "--api-key", envvar="VALDRIX_API_KEY", help="An admin API key."),
    start: str | None = typer.Option(None, help="First day (YYYY-MM-DD); default 29 days before --end."),
    end: str | None = typer.Option(None, help="Last day (YYYY-MM-DD); default today (UTC)."),
) -> None:
    """Download the signed audit archive of a window."""
    base = (server or get_settings().public_url).rstrip("/")
    params = {k: date.fromisoformat(v).isoformat() for k, v in (("start", start), ("end", end)) if v}
    # Written beside the target and renamed at the end, so an interrupted download never sits at --out.
    partial = out.with_name(out.name + ".partial")
    try:
        with httpx.stream("GET", base + "/api/v1/enforcement/exports/archive", params=params, timeout=None,
                          headers={"Authorization": f"Bearer {api_key}"}) as response:
            if response.status_code != 200:
                response.read()
                console.print(f"[red]error[/red] {response.status_code}: {response.text}")
                raise typer.Exit(1)
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        console.print(f"[red]error[/red] the download was interrupted ({exc}); nothing was written to {out}")
        raise typer.Exit(1) from exc
    partial.replace(out)
    console.print(f"archive written to {out} ({out.stat().st_size} bytes); verify it with `valdrix export verify`")
