"""A tenant's policy → a Kubernetes ValidatingAdmissionPolicy and binding (CEL), pure: document in, manifests out.

The API server can enforce, without the gate or its database, the part of the policy that needs neither a
price nor a budget: in environments whose `k8s_admission` mode is `hard`,

- an object whose declared `valdrix.io/estimated-monthly-delta-usd` (or hourly x 730) exceeds
  `entitlements.hard_deny_above_monthly_usd` is denied (reason `hard_deny_threshold_exceeded` at the gate);
- with `kubernetes.require_project_id`, an object without a `valdrix.io/project-id` label or annotation is
  denied (reason `project_id_missing`).

The environment is resolved as the admission adapter does: the `valdrix.io/environment` annotation, then the
label, then the namespace map, else `nonprod`. The CEL uses only the standard library (no Kubernetes string
extensions), so any CEL implementation evaluates it. What it cannot decide, it admits and leaves to the
webhook: environment names in other letter cases or with surrounding blanks (the gate lower-cases and trims
them), amounts not written as plain decimals, sub-cent precision beyond the gate's 4 decimal places, and
every decision that needs a price or a budget. docs/policy-portability.md lists these with the parity table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from valdrix.admission.translate import ENVIRONMENT_KEY, PROJECT_KEY
from valdrix.environments import NONPROD_ENVIRONMENTS, PROD_ENVIRONMENTS
from valdrix.money import HOURS_PER_MONTH
from valdrix.policies.schemas import PolicyDocument
from valdrix.pricing.kubernetes import ANNOTATION_HOURLY, ANNOTATION_MONTHLY, PRICED_RESOURCES

API_VERSION = "admissionregistration.k8s.io/v1"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# A plain decimal, the only amount form both CEL and the gate read the same way.
PLAIN_DECIMAL = r"^[0-9]+(\.[0-9]+)?$"
BLANK = r"^\s*$"
Action = Literal["Deny", "Warn", "Audit"]


def _lit(value: object) -> str:
    """Return a CEL literal: JSON strings, lists and maps are CEL literals too."""
    return json.dumps(value, sort_keys=True)


def _double(value: Decimal) -> str:
    text = format(value, "f")
    return text if "." in text else text + ".0"


def _tag(key: str) -> str:
    """CEL: the non-blank annotation `key`, else the non-blank label, else ''."""
    k = _lit(key)
    return (f"({k} in variables.annotations && !variables.annotations[{k}].matches({_lit(BLANK)}) ? "
            f"variables.annotations[{k}] : ({k} in variables.labels && !variables.labels[{k}].matches({_lit(BLANK)})"
            f" ? variables.labels[{k}] : \"\"))")


def _hard_mode(policy: PolicyDocument) -> str:
    modes = policy.mode_matrix.k8s_admission
    known = sorted(PROD_ENVIRONMENTS | NONPROD_ENVIRONMENTS)
    terms = []
    if modes.prod == "hard":
        terms.append(f"variables.environment in {_lit(sorted(PROD_ENVIRONMENTS))}")
    if modes.nonprod == "hard":
        terms.append(f"variables.environment in {_lit(sorted(NONPROD_ENVIRONMENTS))}")
    if modes.default == "hard":
        terms.append(f"!(variables.environment in {_lit(known)})")
    return " || ".join(terms) or "false"


def _variables(policy: PolicyDocument, namespace_environments: Mapping[str, str]) -> list[dict[str, str]]:
    monthly, hourly = _lit(ANNOTATION_MONTHLY), _lit(ANNOTATION_HOURLY)
    number = _lit(PLAIN_DECIMAL)
    namespaces = _lit(dict(namespace_environments))

    def value(annotations: str, key: str) -> str:
        return f"({key} in variables.{annotations} ? variables.{annotations}[{key}] : \"\")"

    return [
        {"name": "annotations",
         "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}"},
        {"name": "labels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"},
        {"name": "oldAnnotations",
         # Keyed on the operation rather than `oldObject != null`: comparing a map with null is an error in
         # strict CEL implementations.
         "expression": "request.operation == \"UPDATE\" && has(oldObject.metadata.annotations) ? "
                       "oldObject.metadata.annotations : {}"},
        {"name": "environment",
         "expression": f"{_tag(ENVIRONMENT_KEY)} != \"\" ? {_tag(ENVIRONMENT_KEY)} : "
                       f"(request.namespace in {namespaces} ? {namespaces}[request.namespace] : \"nonprod\")"},
        {"name": "hardMode", "expression": _hard_mode(policy)},
        # The declared monthly cost: the monthly annotation, else hourly x 730; -1 when neither is a plain decimal.
        {"name": "declaredMonthly",
         "expression": f"{monthly} in variables.annotations ? "
                       f"(variables.annotations[{monthly}].matches({number}) ? double(variables.annotations[{monthly}])"
                       f" : -1.0) : ({hourly} in variables.annotations && variables.annotations[{hourly}].matches("
                       f"{number}) ? double(variables.annotations[{hourly}]) * {_double(HOURS_PER_MONTH)} : -1.0)"},
        # Annotations persist across updates: on UPDATE a declaration counts only when it changed.
        {"name": "declarationChanged",
         "expression": f"request.operation == \"CREATE\" || {value('annotations', monthly)} != "
                       f"{value('oldAnnotations', monthly)} || {value('annotations', hourly)} != "
                       f"{value('oldAnnotations', hourly)}"},
        {"name": "projectDeclared", "expression": f"{_tag(PROJECT_KEY)} != \"\""},
    ]


def _validations(policy: PolicyDocument, label: str) -> list[dict[str, str]]:
    threshold = policy.entitlements.hard_deny_above_monthly_usd
    out = [{
        "expression": f"!(variables.hardMode && variables.declarationChanged && "
                      f"variables.declaredMonthly > {_double(threshold)})",
        "message": f"Valdrix policy {label}: the declared {ANNOTATION_MONTHLY} exceeds hard_deny_above_monthly_usd "
                   f"({threshold}) in a hard-mode environment (hard_deny_threshold_exceeded)",
        "reason": "Forbidden",
    }]
    if policy.kubernetes.require_project_id:
        out.append({
            "expression": "!(variables.hardMode && !variables.projectDeclared)",
            "message": f"Valdrix policy {label}: objects in hard-mode environments must carry a {PROJECT_KEY} "
                       "label or annotation (project_id_missing)",
            "reason": "Forbidden",
        })
    return out


def _resource_rules() -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for (group, resource) in PRICED_RESOURCES:
        # A Scale object carries no annotations of its own: its price needs the gate.
        if "/" not in resource:
            groups.setdefault(group, []).append(resource)
    return [{"apiGroups": [group], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
             "resources": sorted(resources)} for group, resources in sorted(groups.items())]


def validating_admission_policy(policy: PolicyDocument, *, version: int | None, sha256: str,
                                name: str = "valdrix-gate",
                                namespace_environments: Mapping[str, str] | None = None,
                                excluded_namespaces: Sequence[str] = (),
                                actions: Sequence[Action] = ("Deny",)) -> list[dict[str, Any]]:
    """Return the ValidatingAdmissionPolicy and its binding enforcing `policy`'s database-free rules.

    `version` is the stored version the document is (None for a document read from a file).
    """
    annotations = {"valdrix.io/policy-sha256": sha256}
    if version is not None:
        annotations["valdrix.io/policy-version"] = str(version)
    label = f"v{version}" if version is not None else f"sha256:{sha256[:12]}"
    excluded = list(dict.fromkeys((*SYSTEM_NAMESPACES, *excluded_namespaces)))
    vap = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            # The expressions guard every conversion, so an error means a malformed object: refuse it.
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": _resource_rules(),
                "namespaceSelector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}]},
            },
            "variables": _variables(policy, namespace_environments or {}),
            "validations": _validations(policy, label),
        },
    }
    binding = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"policyName": name, "validationActions": list(actions)},
    }
    return [vap, binding]


def hard_environment_classes(policy: PolicyDocument) -> list[str]:
    """Return the environment classes (`prod`, `nonprod`, `default`) whose k8s_admission mode is hard."""
    modes = policy.mode_matrix.k8s_admission
    return [c for c in ("prod", "nonprod", "default") if getattr(modes, c) == "hard"]
