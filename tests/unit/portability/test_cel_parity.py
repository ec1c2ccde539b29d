"""The rendered ValidatingAdmissionPolicy, evaluated by a real CEL implementation (cel-python), agrees with the
gate (admission translation + decision engine) on every shared Kubernetes fixture the CEL subset can decide.

A case is one fixture object under one policy and one variation (declared cost, environment, project). The
gate's verdict is "denied by a database-free rule": decision DENY with reason hard_deny_threshold_exceeded or
project_id_missing, under a budget large enough that nothing else can deny. The CEL verdict is the policy's
(matchConstraints, then every validation). Cases the CEL subset cannot decide are counted, not compared:
- the gate answers without a decision (no cost increase, a controller-owned pod, a Scale) or refuses an
  unpriceable object: its answer needs the pricer;
- environment names in another letter case or with blanks (CEL has no standard lower-case or trim).
`-s` prints the parity table (docs/policy-portability.md shows it).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes

from tests.conftest import FIXTURES
from tests.unit.admission.test_translate import BOOK, WHERE, k8s_objects, request_for
from valdrix.admission import translate
from valdrix.admission.schemas import parse_review
from valdrix.decisions import engine
from valdrix.policies.schemas import PolicyDocument
from valdrix.portability.engine import validating_admission_policy
from valdrix.pricing.kubernetes import PRICED_RESOURCES

DB_FREE_REASONS = {"hard_deny_threshold_exceeded", "project_id_missing"}
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
ENV = celpy.Environment()


@cache
def _program(expression: str) -> Any:
    return ENV.program(ENV.compile(expression))


def _policy(name: str) -> PolicyDocument:
    modes = {"prod-hard": {"prod": "hard"}, "all-hard+project": {"prod": "hard", "nonprod": "hard", "default": "hard"},
             "soft": {}, "custom-env-hard+project": {"default": "hard"}}[name]
    doc = PolicyDocument().model_dump(mode="json")
    doc["mode_matrix"]["k8s_admission"].update(modes)
    doc["kubernetes"]["require_project_id"] = name.endswith("+project")
    doc["entitlements"]["hard_deny_above_monthly_usd"] = "5000"
    return PolicyDocument.model_validate(doc)


POLICIES = ["prod-hard", "all-hard+project", "soft", "custom-env-hard+project"]


def _annotate(obj: dict[str, Any], annotations: dict[str, str] | None = None,
              labels: dict[str, str] | None = None) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    if labels:
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
    return out


MONTHLY = "valdrix.io/estimated-monthly-delta-usd"
HOURLY = "valdrix.io/estimated-hourly-delta-usd"
# name -> (object variation, namespace, decidable by the CEL subset). Each is sent as a CREATE; the first
# three also as an UPDATE that keeps the declaration (annotations persist: it counts only when it changed).
VARIATIONS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str, bool]] = {
    "as-is": (lambda o: o, "default", True),
    "declared 6000 prod": (lambda o: _annotate(o, {MONTHLY: "6000"}, {"valdrix.io/environment": "prod"}),
                           "default", True),
    "declared 4999.9999 production": (lambda o: _annotate(o, {MONTHLY: "4999.9999",
                                                              "valdrix.io/environment": "production"}),
                                      "default", True),
    "declared 5000.0001 prod+project": (lambda o: _annotate(o, {MONTHLY: "5000.0001"},
                                                            {"valdrix.io/environment": "prod",
                                                             "valdrix.io/project-id": "payments"}),
                                        "default", True),
    "hourly 7 (x730) staging": (lambda o: _annotate(o, {HOURLY: "7"}, {"valdrix.io/environment": "staging"}),
                                "default", True),
    "declared 9000 namespace team-a (prod)": (lambda o: _annotate(o, {MONTHLY: "9000"}), "team-a", True),
    "declared 9000 env qa": (lambda o: _annotate(o, {MONTHLY: "9000"}, {"valdrix.io/environment": "qa"}),
                             "default", True),
    "project label, env live": (lambda o: _annotate(o, None, {"valdrix.io/project-id": "search",
                                                              "valdrix.io/environment": "live"}), "default", True),
    "blank project annotation": (lambda o: _annotate(o, {"valdrix.io/project-id": "  "}), "default", True),
    "declared 9000 env PROD (case)": (lambda o: _annotate(o, {MONTHLY: "9000"}, {"valdrix.io/environment": "PROD"}),
                                      "default", False),
}


def _objects() -> list[tuple[str, dict[str, Any]]]:
    out = list(k8s_objects())
    for path in sorted((FIXTURES / "admission-reviews").glob("*.json")):
        data = json.loads(path.read_text())
        request = data.get("request", data)
        if request.get("operation") in ("CREATE", "UPDATE") and isinstance(request.get("object"), dict):
            out.append((path.name, request["object"]))
    return out


def _gate_denies(req_dict: dict[str, Any], policy: PolicyDocument) -> tuple[str, bool | None]:
    """Return (what happened, denied by a database-free rule) - None when no decision was made."""
    resource = req_dict["resource"]
    if (resource["group"], resource["resource"]) not in PRICED_RESOURCES:
        return "not called (the webhook rules name priced resources only)", None
    req = parse_review(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "request": req_dict}).encode()).request
    outcome = translate.translate(req, BOOK, WHERE, translate.container_defaults(policy))
    if isinstance(outcome, translate.Refused):
        return "refused (unpriceable)", None
    if not isinstance(outcome, translate.Priced):
        return "no decision (no cost increase / owned / scale)", None
    budget = engine.BudgetState(scope_key=outcome.inp.project_id, limit=Decimal("999999999"), reserved=Decimal(0))
    evaluation = engine.evaluate(outcome.inp, policy, 1, engine.Funding(budget=budget), NOW)
    return "decided", evaluation.decision == "DENY" and bool(DB_FREE_REASONS & set(evaluation.reasons))


def _cel(value: Any) -> Any:
    return celpy.json_to_cel(value)


def _cel_denies(manifests: list[dict[str, Any]], req_dict: dict[str, Any], memo: dict[str, Any]) -> bool:
    """Evaluate the policy like the API server: match, then variables in order, then every validation.

    `memo` holds this request's variable values by expression: the policies under test share all variables
    but `hardMode`, so each is evaluated once per request.
    """
    spec = manifests[0]["spec"]
    resource = req_dict["resource"]
    rules = spec["matchConstraints"]["resourceRules"]
    if req_dict.get("subResource") or not any(
            resource["group"] in r["apiGroups"] and resource["resource"] in r["resources"]
            and req_dict["operation"] in r["operations"] for r in rules):
        return False
    (expr,) = spec["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    if req_dict.get("namespace") in expr["values"]:
        return False
    activation: dict[str, Any] = {"object": _cel(req_dict["object"]), "oldObject": _cel(req_dict.get("oldObject")),
                                  "request": _cel({k: v for k, v in req_dict.items()
                                                   if k not in ("object", "oldObject")})}
    variables: dict[celtypes.StringType, Any] = {}
    for variable in spec["variables"]:
        expression = variable["expression"]
        if expression not in memo:
            memo[expression] = _program(expression).evaluate({**activation, "variables": celtypes.MapType(variables)})
        assert not isinstance(memo[expression], celpy.CELEvalError), (variable, memo[expression])
        variables[celtypes.StringType(variable["name"])] = memo[expression]
    for validation in spec["validations"]:
        verdict = _program(validation["expression"]).evaluate({**activation, "variables": celtypes.MapType(variables)})
        assert isinstance(verdict, celtypes.BoolType), (validation, verdict)
        if not verdict:
            return True
    return False


def _requests() -> list[tuple[str, str, str, bool, dict[str, Any]]]:
    out = []
    for name, obj in _objects():
        for index, (variation, (vary, namespace, decidable)) in enumerate(VARIATIONS.items()):
            varied = vary(obj)
            out.append((name, variation, "CREATE", decidable, request_for(varied, namespace=namespace)))
            if index < 3:
                out.append((name, variation, "UPDATE", decidable,
                            request_for(varied, operation="UPDATE", old=copy.deepcopy(varied), namespace=namespace)))
    return out


@pytest.fixture(scope="module")
def parity() -> dict[str, Counter[str]]:
    policies = {name: _policy(name) for name in POLICIES}
    manifests = {name: validating_admission_policy(policy, version=1, sha256=policy.sha256(),
                                                   namespace_environments=WHERE.namespace_environments)
                 for name, policy in policies.items()}
    table: dict[str, Counter[str]] = {name: Counter() for name in POLICIES}
    for _name, variation, operation, decidable, req in _requests():
        memo: dict[str, Any] = {}
        for policy_name, policy in policies.items():
            counts = table[policy_name]
            what, gate = _gate_denies(req, policy)
            cel = _cel_denies(manifests[policy_name], req, memo)
            if gate is None:
                counts[f"not compared: gate {what}"] += 1
                counts["CEL stricter (denies without a gate decision)"] += cel
            elif not decidable:
                counts["not compared: environment letter case"] += 1
                counts["  of which agreeing anyway"] += cel == gate
            else:
                counts["compared"] += 1
                counts["agree: both deny"] += cel and gate
                counts["agree: both admit"] += not cel and not gate
                if cel != gate:
                    counts[f"DISAGREE: {variation} / {operation} / {_name}"] += 1
    return table


@pytest.mark.slow
def test_cel_and_engine_agree_on_every_decidable_case(parity: dict[str, Counter[str]]) -> None:
    disagreements = {p: [k for k in c if k.startswith("DISAGREE")] for p, c in parity.items()}
    assert not any(disagreements.values()), disagreements
    for counts in parity.values():
        assert counts["compared"] == counts["agree: both deny"] + counts["agree: both admit"]
    # Not vacuous: both verdicts occur, over many cases.
    assert sum(c["agree: both deny"] for c in parity.values()) >= 50
    assert sum(c["agree: both admit"] for c in parity.values()) >= 50
    assert parity["soft"]["agree: both deny"] == 0
    _print_table(parity)


def _print_table(parity: dict[str, Counter[str]]) -> None:
    order = ["compared", "agree: both deny", "agree: both admit", "not compared: environment letter case",
             "  of which agreeing anyway", "CEL stricter (denies without a gate decision)"]
    rows = order + sorted({k for c in parity.values() for k in c} - set(order))
    print("\n| case | " + " | ".join(parity) + " |")
    print("|---|" + "---|" * len(parity))
    for row in rows:
        print(f"| {row} | " + " | ".join(str(parity[p][row]) for p in parity) + " |")


def test_rendered_policy_is_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for manifest in validating_admission_policy(_policy("all-hard+project"), version=3, sha256="a" * 64):
        kubernetes_validate.validate(manifest, desired_version="1.31", strict=True)


def test_every_expression_compiles_and_soft_policies_deny_nothing() -> None:
    manifests = validating_admission_policy(_policy("soft"), version=1, sha256="b" * 64)
    spec = manifests[0]["spec"]
    for item in (*spec["variables"], *spec["validations"]):
        _program(item["expression"])
    assert [v["name"] for v in spec["variables"] if v["name"] == "hardMode"]
    assert next(v for v in spec["variables"] if v["name"] == "hardMode")["expression"] == "false"
    assert len(spec["validations"]) == 1  # require_project_id off: no project rule
    assert manifests[1]["spec"] == {"policyName": "valdrix-gate", "validationActions": ["Deny"]}


def test_yaml_round_trip_keeps_the_regexes() -> None:
    manifests = validating_admission_policy(_policy("prod-hard"), version=1, sha256="c" * 64)
    assert list(yaml.safe_load_all(yaml.safe_dump_all(manifests))) == manifests
