"""Contract tests for deploy/helm/valdrix, run against the real helm binary.

helm is taken from $VALDRIX_HELM or .tools/bin/helm (fetched by scripts/fetch-helm.sh when missing).
Without helm the tests skip locally but FAIL when the CI environment variable is set.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from valdrix.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "valdrix"
GUARDRAILS = Path(__file__).resolve().parent / "guardrails"
SOFT = CHART / "ci" / "soft-values.yaml"
HARD = CHART / "ci" / "hard-values.yaml"
MONITORING = CHART / "ci" / "monitoring-values.yaml"
RELEASE = "valdrix"
NAMESPACE = "valdrix"
K8S_VERSION = "1.31"  # newest minor both kubernetes-validate and the chart's kubeVersion cover comfortably

# Custom resources kubernetes-validate has no schema for: checked by hand below.
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

# The runbook §2.2 baseline, except its `*/*` rule: issue 23 names the resources the pricer understands and
# intercepts no subresource but `scale` (tested in test_webhook_rules_name_priced_resources_only).
BASELINE_WEBHOOK: dict[str, Any] = {
    "name": "gate.enforcement.valdrix.io",
    "failurePolicy": "Ignore",
    "timeoutSeconds": 2,
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
    "clientConfig": {
        "service": {
            "namespace": "valdrix",
            "name": "valdrix-api",
            "path": "/api/v1/enforcement/gate/k8s/admission/review",
        }
    },
}


# --------------------------------------------------------------------------------------------- helm


def template(helm: str, *values: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for v in values:
        cmd += ["-f", str(v)]
    cmd += list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(helm: str, *values: Path, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    proc = template(helm, *values, extra=extra)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def webhook_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    vwc = one(docs, "ValidatingWebhookConfiguration")
    assert len(vwc["webhooks"]) == 1
    return vwc["webhooks"][0]


# --------------------------------------------------------------------------------------------- lint


@pytest.mark.parametrize(
    "values",
    [(), (SOFT,), (SOFT, HARD), (HARD,), (SOFT, HARD, MONITORING)],
    ids=["default", "soft", "soft+hard", "hard", "hard+monitoring"],
)
def test_helm_lint_clean(helm: str, values: tuple[Path, ...]) -> None:
    cmd = [helm, "lint", str(CHART), "--strict", "--namespace", NAMESPACE]
    for v in values:
        cmd += ["-f", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


# --------------------------------------------------------------------------------------------- baseline


def test_default_render_is_runbook_baseline(helm: str) -> None:
    docs = render(helm)
    vwc = one(docs, "ValidatingWebhookConfiguration")
    assert vwc["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert vwc["metadata"]["name"] == "valdrix-enforcement-gate"
    hook = webhook_of(docs)
    for key, expected in BASELINE_WEBHOOK.items():
        if key == "clientConfig":
            continue
        assert hook[key] == expected, key
    service = hook["clientConfig"]["service"]
    for key, expected in BASELINE_WEBHOOK["clientConfig"]["service"].items():
        assert service[key] == expected, key
    # The baseline omits the port (Kubernetes default 443); the chart states it explicitly.
    assert service.get("port", 443) == 443
    # CA from cert-manager, never a second source.
    assert "caBundle" not in hook["clientConfig"]
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "valdrix/valdrix-webhook-tls"
    # System namespaces and the release's own namespace are excluded.
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn"
    assert set(expr["values"]) == {"kube-system", "kube-public", "kube-node-lease", NAMESPACE}


def test_default_render_serves_https_and_wires_the_server(helm: str) -> None:
    docs = render(helm)
    svc = one(docs, "Service", "-api")
    assert svc["metadata"]["name"] == "valdrix-api"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["webhook"]["port"] == 443 and ports["webhook"]["targetPort"] == "webhook"
    assert ports["http"]["targetPort"] == "http"

    dep = one(docs, "Deployment", "-api")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["serve"]
    cports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert cports == {"http": 8080, "webhook": 8443}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # failurePolicy Ignore: readiness is the shallow check, a DB blip must not empty the endpoints.
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["tls"] == "/var/run/valdrix/tls" and mounts["tmp"] == "/tmp"
    assert mounts["signing-keys"] == "/var/run/valdrix/signing"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "valdrix-webhook-tls"
    env = {e["name"]: e for e in c["env"]}
    assert env["VALDRIX_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "valdrix-database",
        "key": "url",
    }

    settings = one(docs, "ConfigMap", "-settings")["data"]
    assert settings["VALDRIX_HOST"] == "0.0.0.0"
    assert settings["VALDRIX_PORT"] == "8080"
    assert settings["VALDRIX_TLS_PORT"] == "8443"
    assert settings["VALDRIX_TLS_CERT_FILE"] == "/var/run/valdrix/tls/tls.crt"
    assert settings["VALDRIX_TLS_KEY_FILE"] == "/var/run/valdrix/tls/tls.key"
    assert settings["VALDRIX_SIGNING_KEYS_DIR"] == "/var/run/valdrix/signing"
    assert settings["VALDRIX_ADMISSION_CLUSTER_TENANT"] == "default"
    assert float(settings["VALDRIX_GATE_TIMEOUT_SECONDS"]) < 2
    assert "VALDRIX_ADMISSION_MTLS_TENANTS" not in settings
    assert settings["VALDRIX_GATE_CONCURRENCY"] == "4"  # the database is across the network
    # Every variable the chart sets is one the server reads, with a value it accepts.
    assert all(key.removeprefix("VALDRIX_").lower() in Settings.model_fields for key in settings)
    Settings(**{key.removeprefix("VALDRIX_").lower(): value for key, value in settings.items()
                if key != "VALDRIX_DATABASE_URL"})

    # Hygiene.
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    required = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname" for t in required)
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"

    # cert-manager chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
    issuers = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "Issuer")}
    assert issuers["valdrix-selfsigned"] == {"selfSigned": {}}
    assert issuers["valdrix-webhook-ca"] == {"ca": {"secretName": "valdrix-webhook-ca"}}
    certs = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "Certificate")}
    assert certs["valdrix-webhook-ca"]["isCA"] is True
    serving = certs["valdrix-webhook-tls"]
    assert serving["secretName"] == "valdrix-webhook-tls"
    assert "valdrix-api.valdrix.svc" in serving["dnsNames"]
    assert serving["issuerRef"]["name"] == "valdrix-webhook-ca"

    # Migration hook and reconcile CronJob; worker disabled by default.
    job = one(docs, "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    cron = one(docs, "CronJob", "-reconcile")
    cron_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cron_pod["containers"][0]["args"] == ["reconcile", "--once"]
    assert not [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-worker")]
    # Two replicas by default, so a PDB even under failurePolicy Ignore.
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not by_kind(docs, "HorizontalPodAutoscaler")


def test_aux_workloads_do_not_inherit_api_affinity(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("worker:\n  enabled: true\n")
    docs = render(helm, values)
    worker = one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"] == ["worker"]
    assert "affinity" not in worker
    assert "affinity" not in one(docs, "Job", "-migrate")["spec"]["template"]["spec"]
    assert "affinity" not in one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_soft_profile_renders(helm: str) -> None:
    docs = render(helm, SOFT)
    hook = webhook_of(docs)
    assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 2
    assert hook["clientConfig"]["service"] == {
        "namespace": "valdrix",
        "name": "valdrix-api",
        "path": "/api/v1/enforcement/gate/k8s/admission/review",
        "port": 80,
    }
    ports = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert ports["webhook"]["port"] == 80 and ports["webhook"]["targetPort"] == "webhook"


@pytest.mark.parametrize("values", [(HARD,), (SOFT, HARD)], ids=["hard", "soft+hard"])
def test_hard_profile_renders_fail_closed_deployment(helm: str, values: tuple[Path, ...]) -> None:
    docs = render(helm, *values)
    hook = webhook_of(docs)
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] <= 5
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    dep = one(docs, "Deployment", "-api")
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    pod = dep["spec"]["template"]["spec"]
    required = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    host_terms = [t for t in required if t["topologyKey"] == "kubernetes.io/hostname"]
    assert (
        host_terms and host_terms[0]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    )
    # failurePolicy Fail: readiness is the deep check.
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


# --------------------------------------------------------------------------------------------- guardrails


def _cases(kind: str) -> list[Path]:
    return sorted(p for p in GUARDRAILS.glob(f"g[0-9][0-9]-{kind}*.yaml"))


def _number(path: Path) -> int:
    match = re.match(r"g(\d\d)-", path.name)
    assert match
    return int(match.group(1))


def test_every_guardrail_has_violate_and_fix_cases() -> None:
    assert {_number(p) for p in _cases("violate")} == set(range(1, 13))
    assert {_number(p) for p in _cases("fix")} == set(range(1, 13))


@pytest.mark.parametrize("case", _cases("violate"), ids=lambda p: p.stem)
def test_guardrail_violation_refused_by_schema(helm: str, case: Path) -> None:
    expected = re.search(r"^# expect-schema: (\S+)$", case.read_text(), re.M)
    assert expected, f"{case.name} lacks '# expect-schema:'"
    proc = template(helm, case)
    assert proc.returncode != 0, f"{case.name} rendered"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert expected.group(1) in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", _cases("violate"), ids=lambda p: p.stem)
def test_guardrail_violation_refused_by_template_fail(helm: str, case: Path) -> None:
    proc = template(helm, case, extra=("--skip-schema-validation",))
    assert proc.returncode != 0, f"{case.name} rendered without the schema"
    assert "execution error" in proc.stderr, proc.stderr
    assert f"valdrix guardrail {_number(case)}: " in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", _cases("fix"), ids=lambda p: p.stem)
def test_guardrail_fix_renders(helm: str, case: Path) -> None:
    docs = render(helm, case)
    assert one(docs, "ValidatingWebhookConfiguration")
    docs_no_schema = render(helm, case, extra=("--skip-schema-validation",))
    assert len(docs_no_schema) == len(docs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("config:\n  gateTimeoutSeconds: 2\n", "config.gateTimeoutSeconds (2) must be lower"),
        ("enforcementWebhook:\n  service:\n    namespace: elsewhere\n", "must equal the release namespace"),
        ("enforcementWebhook:\n  certManager:\n    enabled: false\n", "needs a serving certificate"),
        ("database:\n  existingSecret: ''\n", "set database.existingSecret"),
    ],
    ids=["gate-timeout", "service-namespace", "no-tls", "no-database"],
)
def test_consistency_checks(helm: str, tmp_path: Path, overrides: str, message: str) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(overrides)
    proc = template(helm, values, extra=("--skip-schema-validation",))
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_mtls_mode_wires_client_ca_and_tenants(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("enforcementWebhook:\n  authentication:\n    mode: mtls\n    tenant: acme\n")
    docs = render(helm, values)
    settings = one(docs, "ConfigMap", "-settings")["data"]
    assert settings["VALDRIX_TLS_CLIENT_CA_FILE"] == "/var/run/valdrix/client-ca/ca.crt"
    assert yaml.safe_load(settings["VALDRIX_ADMISSION_MTLS_TENANTS"]) == {"valdrix-kube-apiserver": "acme"}
    assert "VALDRIX_ADMISSION_CLUSTER_TENANT" not in settings
    client = one(docs, "Certificate", "-apiserver-client")["spec"]
    assert client["usages"] == ["digital signature", "key encipherment", "client auth"]
    pod = one(docs, "Deployment", "-api")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["client-ca"]["secret"]["secretName"] == "valdrix-webhook-ca"


def test_api_key_mode_sets_no_admission_shortcut(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("enforcementWebhook:\n  authentication:\n    mode: apiKey\n")
    settings = one(render(helm, values), "ConfigMap", "-settings")["data"]
    assert "VALDRIX_ADMISSION_CLUSTER_TENANT" not in settings
    assert "VALDRIX_ADMISSION_MTLS_TENANTS" not in settings


# ------------------------------------------------------------------------------ kubernetes schemas

FULL = (
    "worker:\n  enabled: true\nautoscaling:\n  enabled: true\n"
    "monitoring:\n  enabled: true\n"
    "networkPolicy:\n  enabled: true\n  webhookFrom:\n    - ipBlock:\n        cidr: 10.0.0.0/24\n"
    "pricing:\n  kubernetes:\n    cpu_core_hour_usd: '0.031611'\n"
)


@pytest.mark.parametrize("profile", ["default", "soft", "hard", "full"])
def test_rendered_manifests_pass_kubernetes_schemas(helm: str, tmp_path: Path, profile: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    values: tuple[Path, ...] = {"default": (), "soft": (SOFT,), "hard": (SOFT, HARD)}.get(profile, ())
    if profile == "full":
        full = tmp_path / "full.yaml"
        full.write_text(FULL)
        values = (SOFT, HARD, full)
    docs = render(helm, *values)
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            _check_custom_resource(doc)
            continue
        kubernetes_validate.validate(doc, desired_version=K8S_VERSION, strict=True)
    assert {"Deployment", "Service", "ValidatingWebhookConfiguration", "ConfigMap", "Job", "CronJob"} <= kinds


def _check_custom_resource(doc: dict[str, Any]) -> None:
    """Minimal hand validation for CRDs (no schema ships with kubernetes-validate)."""
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])
    assert doc["metadata"]["namespace"] == NAMESPACE
    spec = doc["spec"]
    kind = doc["kind"]
    if kind == "Issuer":
        assert set(spec) <= {"selfSigned", "ca"} and len(spec) == 1
        if "ca" in spec:
            assert spec["ca"]["secretName"]
    elif kind == "Certificate":
        assert spec["secretName"] and spec["issuerRef"]["name"] and spec["issuerRef"]["kind"] == "Issuer"
        assert spec.get("isCA") or spec.get("dnsNames") or spec.get("commonName")
        for usage in spec.get("usages", []):
            assert usage in {"digital signature", "key encipherment", "server auth", "client auth"}
        assert spec["privateKey"]["algorithm"] in {"RSA", "ECDSA", "Ed25519"}
    elif kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        for ep in spec["endpoints"]:
            assert ep["port"] in {"http", "metrics"} and ep["path"] == "/metrics"
    elif kind == "PrometheusRule":
        names = set()
        for group in spec["groups"]:
            for rule in group["rules"]:
                assert rule["alert"] and rule["expr"] and rule["labels"]["severity"]
                names.add(rule["alert"])
                assert re.fullmatch(r"\d+[smh]", rule["for"])
        exprs = " ".join(r["expr"] for g in spec["groups"] for r in g["rules"])
        for metric in (
            "valdrix_ops_enforcement_gate_failures_total",
            "valdrix_ops_enforcement_gate_lock_events_total",
            "valdrix_ops_enforcement_gate_latency_seconds_bucket",
            "valdrix_ops_enforcement_approval_queue_backlog",
        ):
            assert metric in exprs
        assert 'event=~"contended|timeout"' in exprs
        assert "histogram_quantile(0.95" in exprs
