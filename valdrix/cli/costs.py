"""`valdrix costs import FILE.csv`: load a FOCUS export's daily cost per scope straight into the database."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from valdrix.auth import service as auth
from valdrix.cli.session import db_session
from valdrix.clock import SystemClock
from valdrix.costs import service, translate

app = typer.Typer(no_args_is_help=True, help="Import actual cost data.")
console = Console(stderr=True)


@app.command("import")
def import_focus(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="FOCUS 1.x CSV export."),
    tenant: str = typer.Option(..., help="Tenant name or id."),
    cost_column: str = typer.Option("BilledCost", help="BilledCost (invoiced) or EffectiveCost (amortised)."),
    scope_column: str = typer.Option("Tags.project",
                                     help="Column naming the budget scope, or Tags.<key> for a key of Tags."),
    unscoped: str | None = typer.Option("default", help="Scope for rows without a scope value; '' rejects them."),
    source: str = typer.Option("focus", help="Source name; a re-import replaces this source's billing periods."),
) -> None:
    """Replace the billing periods the file covers with its daily totals per scope; import nothing on any error."""
    if cost_column not in translate.COST_COLUMNS:
        console.print(f"[red]error[/red] --cost-column must be one of {', '.join(translate.COST_COLUMNS)}")
        raise typer.Exit(2)
    with file.open(newline="", encoding="utf-8-sig") as handle:
        result = translate.translate(handle, cost_column=cost_column, scope_column=scope_column,
                                     unscoped=unscoped or None)
    if result.errors:
        for error in result.errors:
            console.print(f"{file}:{error.line}: {error.message}")
        console.print(f"[red]error[/red] {len(result.errors)} bad row(s); nothing was imported")
        raise typer.Exit(1)
    if not result.days:
        console.print("[red]error[/red] the file has no cost rows; nothing was imported")
        raise typer.Exit(1)
    with db_session() as session:
        row = auth.get_tenant(session, tenant)
        batch = service.replace_periods(session, row.id, source, result.days, now=SystemClock().now())
    console.print(f"imported {result.rows} row(s) as {batch.rows} daily total(s) for period(s) "
                  f"{', '.join(batch.periods)} (replaced {batch.replaced}); total {batch.total_usd} USD; "
                  f"batch {batch.batch_id}")
