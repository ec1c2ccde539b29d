"""`valdrix policy …`: working with a tenant's policy document outside the server."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from valdrix.auth import service as auth
from valdrix.cli.session import db_session
from valdrix.config import get_settings
from valdrix.policies import service as policies
from valdrix.policies.schemas import PolicyDocument
from valdrix.portability import engine as portability

app = typer.Typer(no_args_is_help=True, help="Work with policy documents.")
console = Console(stderr=True)


class Format(enum.StrEnum):
    validating_admission_policy = "validating-admission-policy"


class Action(enum.StrEnum):
    deny = "Deny"
    warn = "Warn"
    audit = "Audit"


def _from_file(path: Path) -> PolicyDocument:
    try:
        return PolicyDocument.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        console.print(f"[red]error[/red] cannot read {path}: {exc}")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        console.print(f"[red]error[/red] {path} is not a valid policy document:\n{exc}")
        raise typer.Exit(2) from None


@app.command("render")
def render(
    output_format: Format = typer.Option(..., "--format", help="What to render the policy into."),
    tenant: str | None = typer.Option(None, help="Render this tenant's active policy (read from the database)."),
    file: Path | None = typer.Option(None, help="Render this policy document (JSON or YAML) instead."),
    name: str = typer.Option("valdrix-gate", help="Name of the ValidatingAdmissionPolicy and its binding."),
    action: list[Action] = typer.Option([Action.deny], help="validationActions of the binding (repeatable)."),
    exclude_namespace: list[str] = typer.Option(
        [], help="Namespaces the policy skips besides kube-system, kube-public and kube-node-lease (repeatable)."),
) -> None:
    """Print Kubernetes manifests enforcing the policy's database-free rules inside the API server.

    validating-admission-policy: a ValidatingAdmissionPolicy and binding (Kubernetes >= 1.30) denying, in
    hard-mode environments, objects whose declared valdrix.io/estimated-monthly-delta-usd exceeds
    hard_deny_above_monthly_usd, and (kubernetes.require_project_id) objects without a valdrix.io/project-id.
    Namespace environments come from VALDRIX_ADMISSION_NAMESPACE_ENVIRONMENTS. Install with the chart:
    --set validatingAdmissionPolicy.enabled=true --set-file validatingAdmissionPolicy.manifests=<this output>.
    """
    if (tenant is None) == (file is None):
        console.print("[red]error[/red] give exactly one of --tenant or --file")
        raise typer.Exit(2)
    version: int | None = None
    if file is not None:
        document = _from_file(file)
        digest = document.sha256()
    else:
        assert tenant is not None
        with db_session() as session:
            active = policies.current(session, auth.get_tenant(session, tenant).id)
        document, version, digest = active.document, active.version, active.sha256
    hard = portability.hard_environment_classes(document)
    if not hard:
        console.print("[yellow]note[/yellow] no environment runs k8s_admission in hard mode: the policy admits "
                      "everything (it enforces hard-mode rules only)")
    manifests = portability.validating_admission_policy(
        document, version=version, sha256=digest, name=name,
        namespace_environments=get_settings().admission_namespace_environments,
        excluded_namespaces=exclude_namespace, actions=[a.value for a in action])
    # JSON-compatible YAML, one document per manifest.
    print(yaml.safe_dump_all(json.loads(json.dumps(manifests)), sort_keys=False, width=100000), end="")
