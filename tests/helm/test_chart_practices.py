"""The chart per the Kubernetes webhook good practices (issue 23): a closed values schema, webhook rules
naming only priced resources, matchConditions, PDB, worker probes and scraping, NetworkPolicy, dashboard."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from tests.helm.test_chart import CHART, ROOT, by_kind, one, render, template
from valdrix.policies.schemas import PolicyDocument
from valdrix.pricing.kubernetes import PRICED_RESOURCES

SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "valdrix-gate.json"


def _values(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "v.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ values schema


def test_schema_is_the_generator_output() -> None:
    out = subprocess.run([sys.executable, str(CHART / "hack" / "gen_schema.py")], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == json.loads(SCHEMA.read_text()), "run hack/gen_schema.py > values.schema.json"


def test_default_values_meet_the_schema() -> None:
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(yaml.safe_load(VALUES.read_text()))


def _closed_paths(schema: dict[str, Any], values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Return the path of every mapping in `values` whose schema forbids unknown keys."""
    if not isinstance(values, dict):
        return []
    out = [path] if schema.get("additionalProperties") is False else []
    for key, value in values.items():
        child = schema.get("properties", {}).get(key)
        if isinstance(child, dict):
            out += _closed_paths(child, value, (*path, key))
    return out


def test_an_unknown_key_fails_at_every_level() -> None:
    schema = json.loads(SCHEMA.read_text())
    defaults = yaml.safe_load(VALUES.read_text())
    paths = _closed_paths(schema, defaults)
    # Every mapping of the chart's own values is closed; Kubernetes objects passed through are not.
    open_ = {("affinity",), ("podSecurityContext",), ("securityContext",), ("pricing", "kubernetes")}
    mappings = _all_mappings(defaults)
    assert set(mappings) - set(paths) <= open_ | {p for p in mappings if _under_open(p)}
    assert len(paths) > 30
    validator = jsonschema.Draft7Validator(schema)
    for path in paths:
        values = json.loads(json.dumps(defaults))
        node = values
        for key in path:
            node = node[key]
        node["typoKey"] = True
        errors = [e for e in validator.iter_errors(values) if "typoKey" in e.message]
        assert errors, f"typo under {'.'.join(path) or '(root)'} accepted"
        assert tuple(errors[0].absolute_path) == path


def _all_mappings(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(values, dict):
        return []
    out = [path]
    for key, value in values.items():
        out += _all_mappings(value, (*path, key))
    return out


def _under_open(path: tuple[str, ...]) -> bool:
    # String maps (labels, annotations, nodeSelector, resource quantities) and pass-through objects.
    return any(k in {"labels", "annotations", "nodeSelector", "podAnnotations", "podLabels", "requests", "limits",
                     "affinity", "tenants", "objectSelector", "kubernetes", "podSecurityContext",
                     "securityContext", "seccompProfile", "capabilities"} for k in path)


def test_a_typo_fails_the_install_with_its_path(helm: str) -> None:
    proc = template(helm, extra=("--set", "enforcementWebhook.failurepolicy=Fail"))
    assert proc.returncode != 0
    assert "enforcementWebhook: Additional property failurepolicy is not allowed" in proc.stderr, proc.stderr
    proc = template(helm, extra=("--set", "monitoring.prometheusRule.gateFailurePer10m=1"))
    assert "monitoring.prometheusRule: Additional property gateFailurePer10m is not allowed" in proc.stderr


# ------------------------------------------------------------------------------------------ webhook


def test_webhook_rules_name_priced_resources_only(helm: str) -> None:
    hook = one(render(helm), "ValidatingWebhookConfiguration")["webhooks"][0]
    named = set()
    for rule in hook["rules"]:
        assert rule["operations"] == ["CREATE", "UPDATE"]
        assert "*" not in rule["apiGroups"] and "*" not in rule["apiVersions"]
        for resource in rule["resources"]:
            assert "*" not in resource
            assert "/" not in resource or resource.endswith("/scale"), resource
            named |= {(group, resource) for group in rule["apiGroups"]}
    assert named == set(PRICED_RESOURCES)


def _match(expression: str, username: str, groups: list[str] | None = None) -> bool:
    env = celpy.Environment()
    user: dict[str, Any] = {"username": username}
    if groups is not None:
        user["groups"] = groups
    program = env.program(env.compile(expression))
    return bool(program.evaluate({"request": celpy.json_to_cel({"userInfo": user})}))


def test_match_conditions_skip_own_service_account_and_configured_identities(helm: str, tmp_path: Path) -> None:
    conditions = one(render(helm), "ValidatingWebhookConfiguration")["webhooks"][0]["matchConditions"]
    assert [c["name"] for c in conditions] == ["not-valdrix-service-account"]
    own = "system:serviceaccount:valdrix:valdrix"
    assert not _match(conditions[0]["expression"], own)
    assert _match(conditions[0]["expression"], "alice@example.com")

    values = _values(tmp_path, (
        "enforcementWebhook:\n  excludedUsernames: [\"break-glass\", \"system:serviceaccount:ci:deployer\"]\n"
        "  excludedGroups: [\"sre:oncall\"]\n"
        "  matchConditions:\n    - name: only-labelled\n      expression: \"true\"\n"))
    conditions = one(render(helm, values), "ValidatingWebhookConfiguration")["webhooks"][0]["matchConditions"]
    by_name = {c["name"]: c["expression"] for c in conditions}
    assert list(by_name) == ["not-valdrix-service-account", "not-excluded-usernames", "not-excluded-groups",
                             "only-labelled"]

    def admitted(username: str, groups: list[str] | None = None) -> bool:
        return all(_match(e, username, groups) for e in by_name.values())

    assert admitted("alice", ["dev"]) and admitted("alice")  # no groups at all: still evaluated, still sent
    assert not admitted("break-glass")
    assert not admitted("system:serviceaccount:ci:deployer")
    assert not admitted("bob", ["dev", "sre:oncall"])
    assert not admitted(own)


@pytest.mark.parametrize(("values", "expected"), [
    ("replicaCount: 1\n", False),
    ("replicaCount: 2\n", True),
    ("replicaCount: 1\nenforcementWebhook:\n  podDisruptionBudget:\n    enabled: true\n    maxUnavailable: 1\n", True),
    ("replicaCount: 1\nautoscaling:\n  enabled: true\n  minReplicas: 3\n", True),
], ids=["one-replica", "two-replicas", "asked-for", "hpa-min-3"])
def test_pdb_whenever_two_or_more_replicas(helm: str, tmp_path: Path, values: str, expected: bool) -> None:
    docs = render(helm, _values(tmp_path, values))
    assert bool(by_kind(docs, "PodDisruptionBudget")) is expected


def test_worker_is_probed_and_scraped(helm: str, tmp_path: Path) -> None:
    docs = render(helm, _values(tmp_path, "worker:\n  enabled: true\nmonitoring:\n  enabled: true\n"))
    worker = one(docs, "Deployment", "-worker")["spec"]["template"]
    (container,) = worker["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VALDRIX_WORKER_METRICS_PORT"] == "9102"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert worker["metadata"]["annotations"]["prometheus.io/port"] == "9102"
    service = one(docs, "Service", "-worker-metrics")
    assert service["spec"]["selector"] == one(docs, "Deployment", "-worker")["spec"]["selector"]["matchLabels"]
    monitor = one(docs, "ServiceMonitor", "-worker")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    api = one(docs, "Deployment", "-api")["spec"]["template"]["metadata"]["annotations"]
    assert api["prometheus.io/scrape"] == "true" and api["prometheus.io/port"] == "8080"


@pytest.mark.parametrize(("values", "expected"), [
    ("", True),
    ("enforcementWebhook:\n  authentication:\n    mode: mtls\n", False),
    ("enforcementWebhook:\n  authentication:\n    mode: apiKey\n", False),
    ("networkPolicy:\n  enabled: false\n", False),
    ("enforcementWebhook:\n  authentication:\n    mode: apiKey\nnetworkPolicy:\n  enabled: true\n"
     "  webhookFrom: [{ipBlock: {cidr: 10.0.0.0/24}}]\n", True),
], ids=["clusterTenant-default", "mtls", "apiKey", "off", "forced-on"])
def test_network_policy_on_by_default_for_cluster_tenant(helm: str, tmp_path: Path, values: str,
                                                         expected: bool) -> None:
    docs = render(helm, _values(tmp_path, values))
    policies = by_kind(docs, "NetworkPolicy")
    assert bool(policies) is expected
    if policies and not values:
        webhook_rule = next(r for r in policies[0]["spec"]["ingress"] if r["ports"][0]["port"] == "webhook")
        assert webhook_rule["from"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]


# ------------------------------------------------------------------------------------------ dashboard


def test_dashboard_configmap_carries_the_sidecar_label(helm: str, tmp_path: Path) -> None:
    docs = render(helm, _values(tmp_path, "monitoring:\n  enabled: true\n  grafanaDashboard:\n    folder: FinOps\n"))
    cm = one(docs, "ConfigMap", "-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "FinOps"}
    assert json.loads(cm["data"]["valdrix-gate.json"]) == json.loads(DASHBOARD.read_text())
    assert (CHART / "dashboards" / "valdrix-gate.json").read_text() == DASHBOARD.read_text()


def test_dashboard_covers_the_operator_questions() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Decisions by outcome and source", "Gate latency percentiles", "Fail-safe answers by reason",
                   "Lock contention", "Approval backlog", "Oldest pending approval", "Notification deliveries",
                   "Budget utilisation per scope", "Audit exports"):
        assert wanted in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert 'namespace="$namespace"' in target["expr"], target["expr"]


def _exported_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    from valdrix.app import SCRAPE_COLLECTORS
    from valdrix.budgets.metrics import BudgetCollector
    from valdrix.observability.metrics import BuildInfo

    # Importing the app (above) and the job runner registers every process-wide metric of the API and worker.
    importlib.import_module("valdrix.jobs.runner")
    families = list(REGISTRY.collect())
    # The app's scrape-time collectors describe their families without touching a database.
    for collector in (*(c(None, None) for c in SCRAPE_COLLECTORS),  # type: ignore[arg-type]
                      BudgetCollector(None, None, 1)):  # type: ignore[arg-type]
        families += collector.describe()
    families += list(BuildInfo("api").collect())
    names = set()
    for family in families:
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_dashboard_and_alerts_query_metrics_the_code_exports(helm: str, tmp_path: Path) -> None:
    exported = _exported_metric_names()
    rule = one(render(helm, _values(tmp_path, "monitoring:\n  enabled: true\n")), "PrometheusRule")
    queries = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    queries += [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = {m for q in queries for m in re.findall(r"\b(valdrix_[a-z0-9_]+)", q)}
    assert used - exported == set()


# ------------------------------------------------------------------------------------------ admission policy


def test_chart_installs_the_rendered_validating_admission_policy(helm: str, tmp_path: Path) -> None:
    policy = PolicyDocument().model_dump(mode="json")
    policy["mode_matrix"]["k8s_admission"]["prod"] = "hard"
    policy["kubernetes"]["require_project_id"] = True
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    rendered = subprocess.run([sys.executable, "-m", "valdrix", "policy", "render", "--format",
                               "validating-admission-policy", "--file", str(tmp_path / "policy.json")],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "vap.yaml").write_text(rendered.stdout)
    docs = render(helm, extra=("--set", "validatingAdmissionPolicy.enabled=true",
                               "--set-file", f"validatingAdmissionPolicy.manifests={tmp_path / 'vap.yaml'}"))
    vap = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert vap["metadata"]["labels"]["app.kubernetes.io/instance"] == "valdrix"
    assert [v["reason"] for v in vap["spec"]["validations"]] == ["Forbidden", "Forbidden"]
    assert binding["spec"] == {"policyName": "valdrix-gate", "validationActions": ["Deny"]}
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in (vap, binding):
        kubernetes_validate.validate(doc, desired_version="1.31", strict=True)


@pytest.mark.parametrize(("manifests", "message"), [
    ("", "needs validatingAdmissionPolicy.manifests"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "may hold only ValidatingAdmissionPolicy"),
], ids=["missing", "other-kind"])
def test_chart_refuses_bad_admission_policy_manifests(helm: str, tmp_path: Path, manifests: str,
                                                      message: str) -> None:
    (tmp_path / "vap.yaml").write_text(manifests)
    proc = template(helm, extra=("--set", "validatingAdmissionPolicy.enabled=true",
                                 "--set-file", f"validatingAdmissionPolicy.manifests={tmp_path / 'vap.yaml'}"))
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
