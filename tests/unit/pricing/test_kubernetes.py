"""Kubernetes estimator: quantities, every shared fixture, hand-computed prices, deltas, overrides, junk."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valdrix.pricing.kubernetes import (
    ANNOTATION_HOURLY,
    ANNOTATION_MONTHLY,
    ANNOTATION_RUNTIME,
    PriceBook,
    PriceBookError,
    PricingError,
    parse_quantity,
    price_change,
    price_object,
    runs_per_month,
)

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "third_party"
K8S = FIXTURES / "k8s-objects"
REVIEWS = FIXTURES / "admission-reviews"

# OpenCost default price book (peers.md §3.4), as shipped in valdrix/pricing/data/kubernetes_prices.yaml.
CPU = Decimal("0.031611")  # per vCPU-hour
RAM = Decimal("0.004237")  # per GiB-hour
GPU = Decimal("0.95")  # per GPU-hour
STORAGE = Decimal("0.04")  # per GiB-month
LB = Decimal("18.25")  # per LoadBalancer-month
H = Decimal(730)

BOOK = PriceBook.load(None)


def docs(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [json.loads(text)]
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def fixture(relative: str, index: int = 0) -> dict[str, Any]:
    return docs(K8S / relative)[index]


def request(name: str) -> dict[str, Any]:
    data = json.loads((REVIEWS / name).read_text(encoding="utf-8"))
    return data.get("request", data)  # type: ignore[no-any-return]


def q4(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.0001"))


K8S_FILES = sorted(p for p in K8S.rglob("*") if p.is_file())
REVIEW_FILES = sorted(REVIEWS.glob("*.json"))


def test_fixture_directories_are_present() -> None:
    assert len(K8S_FILES) >= 28 and len(REVIEW_FILES) >= 17


# ---------------------------------------------------------------- quantities


@pytest.mark.parametrize(("raw", "expected"), [
    ("100m", "0.1"), ("1", "1"), ("2", "2"), (2, "2"), (0.15, "0.15"), ("0.5", "0.5"), (".5", "0.5"),
    ("1.", "1"),
    ("+1", "1"), ("250n", "0.00000025"), ("5u", "0.000005"),
    ("1k", "1000"), ("129M", "129000000"), ("1G", "1000000000"), ("1T", "1e12"), ("1P", "1e15"),
    ("1E", "1e18"),
    ("1Ki", "1024"), ("123Mi", "128974848"), ("1Gi", "1073741824"), ("1.5Gi", "1610612736"),
    ("1Ti", str(2**40)), ("1Pi", str(2**50)), ("1Ei", str(2**60)),
    ("1e3", "1000"), ("1E3", "1000"), ("129e6", "129000000"), ("5e-3", "0.005"), ("12E+2", "1200"),
    ("256M", "256000000"),
])
def test_parse_quantity_exact(raw: object, expected: str) -> None:
    assert parse_quantity(raw) == Decimal(expected)


@pytest.mark.parametrize("raw", [
    "", " 1", "1 ", "abc", "1 Gi", "1GB", "1gi", "1KI", "--1", "1..2", "e3", "1e", "1e1000", "0x10", "1_000",
    "9Ei", "NaN", "Infinity", None, True, False, [], {}, float("nan"), float("inf"), Decimal("1"), b"1",
])
def test_parse_quantity_rejects(raw: object) -> None:
    with pytest.raises(PricingError):
        parse_quantity(raw)


# ---------------------------------------------------------------- every fixture


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_every_k8s_object_fixture_prices(path: Path) -> None:
    for doc in docs(path):
        cost = price_object(doc, BOOK)
        assert cost.kind == doc["kind"]
        assert cost.monthly_usd >= 0 and cost.monthly_usd.as_tuple().exponent == -4
        assert cost.hourly_usd.as_tuple().exponent == -6
        assert abs(cost.hourly_usd * H - cost.monthly_usd) < Decimal("0.001")
        json.dumps(cost.as_dict())
        if doc["kind"] in {"ServiceAccount", "StorageClass"} or (
                doc["kind"] == "Service" and doc["spec"].get("type") != "LoadBalancer"):
            assert not cost.cost_impact and cost.monthly_usd == 0


@pytest.mark.parametrize("path", REVIEW_FILES, ids=lambda p: p.name)
def test_every_admission_review_fixture_prices(path: Path) -> None:
    req = request(path.name)
    for obj in (req.get("object"), req.get("oldObject")):
        if obj is not None:
            assert price_object(obj, BOOK).monthly_usd >= 0
    if req["operation"] not in {"CREATE", "UPDATE", "DELETE", "CONNECT"}:
        # kubernetes/api round-trip fixture: placeholder operation and a CustomType object.
        with pytest.raises(PricingError, match="operationValue"):
            price_change(req["operation"], req.get("object"), req.get("oldObject"), BOOK)
        assert not price_object(req["object"], BOOK).cost_impact
        return
    delta = price_change(req["operation"], req.get("object"), req.get("oldObject"), BOOK)
    json.dumps(delta.breakdown())
    if req["operation"] == "DELETE":
        assert delta.monthly_delta_usd <= 0 and delta.after is None


# Hand-computed expectations with the default book; arithmetic in the comments.
HAND_COMPUTED = [
    # guestbook frontend: 3 x (0.1 vCPU x 0.031611 + 100Mi = 0.09765625 GiB x 0.004237) x 730
    #   = 3 x (0.0031611 + 0.00041376953125) x 730 = 3 x 2.6096547578125 = 7.8289642734 -> 7.8290
    ("examples__guestbook-frontend-deployment.yaml", 0, Decimal("7.8290")),
    # vLLM: 1 x (2 x 0.031611 + 10 GiB x 0.004237 + 1 GPU x 0.95) x 730 = 1.055592 x 730 = 770.58216
    ("examples__vllm-deployment-gpu.yaml", 0, Decimal("770.5822")),
    # trainer: 2 x (4 x 0.031611 + 16 x 0.004237 + 1 x 0.95) x 730 = 2 x 1.144236 x 730 = 1670.58456
    ("kubectl-generated/deployment-gpu-trainer.json", 0, Decimal("1670.5846")),
    # cassandra: 3 x [(0.5 x 0.031611 + 1 x 0.004237) x 730 + 1 GiB x 0.04 (class "fast" unpriced -> default)]
    #   = 3 x (0.0200425 x 730 + 0.04) = 3 x 14.671025 = 44.013075
    ("examples__cassandra-statefulset-vct.yaml", 0, Decimal("44.0131")),
    # guaranteed pod: (2 x 0.031611 + 256M = 256e6/2^30 = 0.2384185791015625 GiB x 0.004237) x 730
    #   = (0.063222 + 0.001010179519653...) x 730 = 46.889491049...
    ("examples__pod-guaranteed-integer-cpu.yaml", 0, Decimal("46.8895")),
    # node-exporter DaemonSet on 3 nodes: containers 102m+10m CPU, 180Mi+20Mi = 0.1953125 GiB
    #   3 x (0.112 x 0.031611 + 0.1953125 x 0.004237) x 730 = 3 x 0.0043679710625 x 730 = 9.565856626875
    ("kube-prometheus__node-exporter-daemonset.yaml", 0, Decimal("9.5659")),
    # legacy DaemonSet, cpu 0.15 as a YAML float: 3 x 0.15 x 0.031611 x 730 = 10.3842045
    ("examples__daemonset-legacy-extensions-v1beta1.yaml", 0, Decimal("10.3842")),
    # kueue Job: min(parallelism 3, completions 3) pods x (1 x 0.031611 + 200Mi 0.1953125 x 0.004237) x 1 h
    #   = 3 x 0.0324385390625 = 0.0973156171875 (a one-off run expressed as this month's cost)
    ("kueue__job-parallelism-3.yaml", 0, Decimal("0.0973")),
    # descheduler CronJob */2: 30 runs/h x 24 x 365/12 = 21900 runs x 1 h default, Forbid caps at 730 h
    #   1 pod x (0.5 x 0.031611 + 0.25 x 0.004237) x 730 = 0.01686475 x 730 = 12.3112675
    ("descheduler__cronjob.yaml", 0, Decimal("12.3113")),
    # kueue CronJob every minute (43800 runs/month), Allow -> overlapping: 3 pods x 43800 h x 0.0324385390625
    ("kueue__cronjob-parallelism-3.yaml", 0, Decimal("4262.4240")),
    # minio: 4 replicas, no requests, VCT 10Gi x 0.04 = 0.40 each -> 1.60
    ("examples__minio-statefulset-vct-no-resources.yaml", 0, Decimal("1.6000")),
    # PVCs: 3Gi x 0.04 = 0.12; 5Gi via beta annotation (unpriced class) x 0.04 = 0.20; 1Gi no class = 0.04
    ("examples__pvc-storageclass-slow.json", 0, Decimal("0.1200")),
    ("examples__pvc-azure-managed-ssd-beta-annotation.yaml", 0, Decimal("0.2000")),
    ("examples__tf-serving-pvc-no-storageclass.yaml", 0, Decimal("0.0400")),
    # LoadBalancer Services: flat 18.25
    ("examples__guestbook-service-loadbalancer.yaml", 0, LB),
    ("kubectl-generated/service-loadbalancer.json", 0, LB),
    ("microservices-demo__frontend-with-loadbalancer.yaml", 2, LB),
    # web (limits ignored): 3 x (0.25 x 0.031611 + 0.25 GiB x 0.004237) x 730 = 3 x 0.008962 x 730 = 19.62678
    ("kubectl-generated/deployment-web-requests-limits.json", 0, Decimal("19.6268")),
    # no resources at all: priced at 0 but still a workload
    ("kubectl-generated/deployment-web-3-replicas-no-resources.json", 0, Decimal("0.0000")),
]


@pytest.mark.parametrize(("name", "index", "expected"), HAND_COMPUTED)
def test_hand_computed_fixture_prices(name: str, index: int, expected: Decimal) -> None:
    cost = price_object(fixture(name, index), BOOK)
    assert cost.monthly_usd == expected
    assert cost.cost_impact


def test_hand_computed_admission_requests() -> None:
    # fluentd DaemonSet: 3 x (0.1 x 0.031611 + 200Mi 0.1953125 x 0.004237) x 730 = 8.735119546875
    req = request("kubewarden__daemonset_create.request.json")
    assert price_change("CREATE", req["object"], None, BOOK).monthly_delta_usd == Decimal("8.7351")
    # two containers 3m/3Gi + 2m/2Gi: (0.005 x 0.031611 + 5 x 0.004237) x 730 = 15.58043015
    req = request("kubewarden__pod_create_exceeding_range.request.json")
    delta = price_change("CREATE", req["object"], None, BOOK)
    assert delta.monthly_delta_usd == Decimal("15.5804")
    assert delta.hourly_delta_usd == Decimal("0.021343")  # 0.005 x 0.031611 + 5 x 0.004237 = 0.021343055
    # PVC class "fast" 4Gi x 0.04 = 0.16; StatefulSet 3 replicas x 1Gi x 0.04 = 0.12 (no container requests)
    assert price_change("CREATE", request("kubewarden__pvc_create_storageclass.request.json")["object"], None,
                        BOOK).monthly_delta_usd == Decimal("0.1600")
    assert price_change("CREATE", request("kubewarden__statefulset_create_vct.request.json")["object"], None,
                        BOOK).monthly_delta_usd == Decimal("0.1200")
    # annotation-only UPDATE (replicas 0 both sides): no change
    req = request("kubewarden__deployment_update_with_oldObject.request.json")
    assert price_change("UPDATE", req["object"], req["oldObject"], BOOK).monthly_delta_usd == 0


def test_pod_created_by_replicaset_is_owned() -> None:
    req = request("kubewarden__pod_create_by_replicaset_controller.request.json")
    cost = price_object(req["object"], BOOK)
    assert cost.owned_by_controller
    # second container 100m / 20Mi: (0.1 x 0.031611 + 0.01953125 x 0.004237) x 730 = 2.36799...
    assert cost.monthly_usd == Decimal("2.3680")
    assert any("owned by a controller" in n for n in price_change("CREATE", req["object"], None, BOOK).notes)
    assert not price_object(fixture("examples__javaweb-pod-initcontainer.yaml"), BOOK).owned_by_controller


# ---------------------------------------------------------------- admission deltas


def test_scale_up_and_scale_down_deltas() -> None:
    old = fixture("examples__guestbook-frontend-deployment.yaml")
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    up = price_change("UPDATE", new, old, BOOK)
    # after 5 x 2.6096547578125 = 13.0482737890625 -> 13.0483; before 7.8290; delta 5.2193
    assert up.monthly_delta_usd == Decimal("5.2193")
    assert up.before is not None and up.after is not None and up.after.replicas == 5
    down = price_change("update", old, new, BOOK)
    assert down.monthly_delta_usd == Decimal("-5.2193") and down.hourly_delta_usd < 0


def test_delete_credits_old_cost() -> None:
    delta = price_change("DELETE", None, fixture("examples__guestbook-frontend-deployment.yaml"), BOOK)
    assert delta.monthly_delta_usd == Decimal("-7.8290") and delta.after is None
    req = request("kubewarden__pod_delete.request.json")
    assert price_change("DELETE", req.get("object"), req["oldObject"], BOOK).monthly_delta_usd <= 0
    empty = price_change("DELETE", None, None, BOOK)
    assert empty.monthly_delta_usd == 0 and not empty.cost_impact


def test_operation_errors() -> None:
    dep = fixture("examples__guestbook-frontend-deployment.yaml")
    with pytest.raises(PricingError):
        price_change("CREATE", None, None, BOOK)
    with pytest.raises(PricingError):
        price_change("UPDATE", dep, None, BOOK)
    with pytest.raises(PricingError):
        price_change("PATCH", dep, None, BOOK)
    assert price_change("CONNECT", None, None, BOOK).monthly_delta_usd == 0


def test_breakdown_is_json_ready() -> None:
    delta = price_change("CREATE", fixture("kubectl-generated/deployment-gpu-trainer.json"), None, BOOK)
    data = json.loads(json.dumps(delta.breakdown()))
    assert data["monthly_delta_usd"] == "1670.5846"
    line = data["after"]["containers"][0]
    assert line == {"name": "pytorch", "role": "container", "cpu_cores": "4", "memory_gib": "16", "gpus": "1",
                    "replicas": "2", "hourly_usd": "1.144236", "monthly_usd": "1670.5846"}


# ---------------------------------------------------------------- pod rules


def pod(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **metadata}, "spec": spec}


def c(name: str, requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
      **extra: Any) -> dict[str, Any]:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    return {"name": name, "image": "x", "resources": resources, **extra}


def test_init_containers_use_max_of_init_and_sum_of_app() -> None:
    spec = {"initContainers": [c("migrate", {"cpu": "2", "memory": "1Gi"}), c("small", {"cpu": "100m"})],
            "containers": [c("a", {"cpu": "500m", "memory": "256Mi"}),
                           c("b", {"cpu": "500m", "memory": "256Mi"})]}
    cost = price_object(pod(spec), BOOK)
    # effective: cpu max(2, 1) = 2, memory max(1Gi, 0.5Gi) = 1Gi
    #   -> (2 x 0.031611 + 1 x 0.004237) x 730 = 0.067459 x 730 = 49.24507
    assert cost.monthly_usd == Decimal("49.2451")
    init = [line for line in cost.containers if line.role == "init"]
    assert len(init) == 1 and init[0].cpu_cores == 1 and init[0].memory_gib == Decimal("0.5")
    # init smaller than the app containers: no init line, price = app sum
    spec["initContainers"] = [c("tiny", {"cpu": "10m", "memory": "1Mi"})]
    cost = price_object(pod(spec), BOOK)
    assert [line.role for line in cost.containers] == ["container", "container"]
    assert cost.monthly_usd == q4((Decimal(1) * CPU + Decimal("0.5") * RAM) * H)


def test_sidecar_init_containers_add_to_running_pod() -> None:
    spec = {"initContainers": [c("proxy", {"cpu": "1"}, restartPolicy="Always"), c("setup", {"cpu": "1"})],
            "containers": [c("app", {"cpu": "500m"})]}
    cost = price_object(pod(spec), BOOK)
    # running = 0.5 + 1 (sidecar) = 1.5; init peak = setup 1 + sidecar 1 = 2 -> 2 vCPU (0.5 on init line)
    assert cost.monthly_usd == q4(2 * CPU * H)
    assert [line.role for line in cost.containers] == ["container", "sidecar", "init"]


def test_pod_overhead_is_added() -> None:
    spec = {"containers": [c("app", {"cpu": "1", "memory": "1Gi"})],
            "overhead": {"cpu": "250m", "memory": "120Mi"}}
    cost = price_object(pod(spec), BOOK)
    # (1.25 x 0.031611 + (1 + 0.1171875) GiB x 0.004237) x 730 = (0.03951375 + 0.0047335234375) x 730
    expected = q4((Decimal("1.25") * CPU + Decimal("1.1171875") * RAM) * H)
    assert cost.monthly_usd == expected == Decimal("32.3005")
    assert cost.containers[-1].role == "overhead"


def test_limits_only_container_requests_its_limits() -> None:
    limits_only = price_object(pod({"containers": [c("a", None, {"cpu": "1", "memory": "1Gi"})]}), BOOK)
    requests = price_object(pod({"containers": [c("a", {"cpu": "1", "memory": "1Gi"})]}), BOOK)
    assert limits_only.monthly_usd == requests.monthly_usd == q4((CPU + RAM) * H)
    # per resource: cpu from requests, memory from limits
    mixed = price_object(pod({"containers": [c("a", {"cpu": "1"}, {"cpu": "4", "memory": "1Gi"})]}), BOOK)
    assert mixed.monthly_usd == requests.monthly_usd


def test_gpu_like_resources() -> None:
    amd = price_object(pod({"containers": [c("a", None, {"amd.com/gpu": "2"})]}), BOOK)
    assert amd.monthly_usd == q4(2 * GPU * H) == Decimal("1387.0000")
    tpu = pod({"containers": [c("a", None, {"example.com/tpu": "1"})]})
    assert price_object(tpu, BOOK).monthly_usd == 0
    custom = PriceBook.from_mapping(book_mapping(defaults={"gpu_resources": ["example.com/tpu"]}))
    assert price_object(tpu, custom).monthly_usd == q4(GPU * H)


def test_workload_replica_defaults_and_zero() -> None:
    rs = request("kubewarden__replicaset_create.request.json")["object"]
    assert price_object(rs, BOOK).replicas == 2
    frontend = fixture("microservices-demo__frontend-with-loadbalancer.yaml")
    assert "replicas" not in frontend["spec"] and price_object(frontend, BOOK).replicas == 1
    rc = {"kind": "ReplicationController", "spec": {"replicas": 0, "template": {"spec": {
        "containers": [c("a", {"cpu": "1"})]}}}}
    assert price_object(rc, BOOK).monthly_usd == 0


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret", "Role", "RoleBinding", "ClusterRole",
                                  "ServiceAccount",
                                  "Namespace", "NetworkPolicy", "Ingress", "StorageClass", "CustomType"])
def test_kinds_without_cost(kind: str) -> None:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, "data": {"a": "b"}}
    cost = price_object(obj, BOOK)
    assert cost.monthly_usd == 0 and not cost.cost_impact
    assert not price_change("CREATE", {"kind": kind}, None, BOOK).cost_impact


def test_service_type_change_to_load_balancer() -> None:
    old = fixture("microservices-demo__frontend-with-loadbalancer.yaml", 1)
    new = copy.deepcopy(old)
    new["spec"]["type"] = "LoadBalancer"
    delta = price_change("UPDATE", new, old, BOOK)
    assert delta.monthly_delta_usd == LB and delta.hourly_delta_usd == Decimal("0.025000")
    assert delta.cost_impact


# ---------------------------------------------------------------- jobs and cron


def test_job_runtime_annotation() -> None:
    job = fixture("kueue__job-parallelism-3.yaml")
    job["metadata"]["annotations"] = {ANNOTATION_RUNTIME: "2.5"}
    # 3 pods x 2.5 h x 0.0324385390625 = 0.243289042969
    assert price_object(job, BOOK).monthly_usd == Decimal("0.2433")
    job["spec"]["completions"] = 1  # completions bound parallelism
    assert price_object(job, BOOK).monthly_usd == q4(Decimal("2.5") * Decimal("0.0324385390625"))
    for bad in ("two", "-1", "NaN", "1e13", 3):
        job["metadata"]["annotations"] = {ANNOTATION_RUNTIME: bad}
        with pytest.raises(PricingError, match=ANNOTATION_RUNTIME):
            price_object(job, BOOK)


def test_cronjob_runtime_annotation_and_schedule() -> None:
    cron = fixture("kubectl-generated/cronjob-nightly-no-resources.json")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}}
    cron["spec"]["jobTemplate"]["metadata"]["annotations"] = {ANNOTATION_RUNTIME: "0.5"}
    # daily: 365/12 runs x 0.5 h x (2 x 0.031611 + 4 x 0.004237) = 15.2083333 h x 0.08017 = 1.21925208
    assert price_object(cron, BOOK).monthly_usd == Decimal("1.2193")


@pytest.mark.parametrize(("schedule", "expected"), [
    ("* * * * *", Decimal(43800)),
    ("0 * * * *", Decimal(730)), ("@hourly", Decimal(730)),
    ("*/15 * * * *", Decimal(2920)),
    ("@daily", Decimal(365) / 12), ("0 2 * * *", Decimal(365) / 12),
    ("@weekly", Decimal(365) / 84),
    ("0 9 * * 1-5", Decimal(365 * 5) / 84), ("0 9 * * MON-FRI", Decimal(365 * 5) / 84),
    ("@monthly", Decimal(1)), ("@yearly", Decimal(1) / 12), ("0 0 1 1 *", Decimal(1) / 12),
    ("0 0 31 * *", Decimal(7) / 12), ("0 0 * JAN,jul *", Decimal(62) / 12),
    # day-of-month OR day-of-week when neither starts with '*': 24 dated days + 341 others x 1/7
    ("0 0 1,15 * 1", Decimal(24 * 7 + 341) / 84),
    ("0 0 */2 * 1", Decimal(186) / 84),  # '*'-prefixed day-of-month -> AND: 186 odd days x 1/7
    ("0 0 * * 0,7", Decimal(365) / 84),
    ("@every 30m", Decimal(1460)), ("@every 1h30m", Decimal(730) * 3600 / 5400),
])
def test_runs_per_month(schedule: str, expected: Decimal) -> None:
    assert runs_per_month(schedule) == expected


@pytest.mark.parametrize("schedule", ["61 * * * *", "* * *", "@reboot", "TZ=UTC 0 * * * *", "*/0 * * * *",
                                      "0 0 32 * *", "5-1 * * * *", "@every 0s", "0 0 * FOO *", ""])
def test_runs_per_month_rejects(schedule: str) -> None:
    with pytest.raises(PricingError):
        runs_per_month(schedule)


# ---------------------------------------------------------------- HPA


def test_hpa_priced_by_max_replicas_with_min_floor() -> None:
    vllm = price_object(fixture("examples__vllm-deployment-gpu.yaml"), BOOK)
    hpa = fixture("examples__vllm-gpu-hpa.yaml")
    cost = price_object(hpa, BOOK, target_pod_monthly=vllm.pod_monthly_usd)
    # worst case maxReplicas 5 x 770.5822; floor minReplicas 1 x 770.5822
    assert cost.monthly_usd == Decimal("3852.9110") and cost.floor_monthly_usd == Decimal("770.5822")
    unknown = price_object(hpa, BOOK)
    assert unknown.monthly_usd == 0 and unknown.cost_impact and "not supplied" in unknown.notes[0]
    bigger = copy.deepcopy(hpa)
    bigger["spec"]["maxReplicas"] = 10
    delta = price_change("UPDATE", bigger, hpa, BOOK, target_pod_monthly=vllm.pod_monthly_usd)
    assert delta.monthly_delta_usd == 5 * Decimal("770.5822")
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                   "targetCPUUtilizationPercentage": 80}}
    v1_cost = price_object(v1, BOOK, target_pod_monthly=Decimal("10"))
    assert v1_cost.monthly_usd == 30 and v1_cost.floor_monthly_usd == 10  # minReplicas defaults to 1
    del v1["spec"]["maxReplicas"]
    with pytest.raises(PricingError, match="maxReplicas"):
        price_object(v1, BOOK, target_pod_monthly=Decimal("10"))
    with pytest.raises(PricingError):
        price_object(hpa, BOOK, target_pod_monthly=Decimal("-1"))


# ---------------------------------------------------------------- overrides


def annotated(**annotations: Any) -> dict[str, Any]:
    dep = fixture("examples__guestbook-frontend-deployment.yaml")
    dep["metadata"]["annotations"] = annotations
    return dep


def test_override_annotations() -> None:
    monthly_only = price_change("CREATE", annotated(**{ANNOTATION_MONTHLY: "100"}), None, BOOK)
    assert monthly_only.overridden and monthly_only.monthly_delta_usd == Decimal("100.0000")
    assert monthly_only.hourly_delta_usd == Decimal("0.136986")  # 100 / 730 = 0.1369863
    assert monthly_only.after is not None and monthly_only.after.monthly_usd == Decimal("7.8290")
    hourly_only = price_change("CREATE", annotated(**{ANNOTATION_HOURLY: "0.5"}), None, BOOK)
    assert hourly_only.monthly_delta_usd == Decimal("365.0000")
    assert hourly_only.hourly_delta_usd == Decimal("0.5")
    pair = annotated(**{ANNOTATION_MONTHLY: "12", ANNOTATION_HOURLY: "0.02"})
    both = price_change("CREATE", pair, None, BOOK)
    assert (both.monthly_delta_usd, both.hourly_delta_usd) == (Decimal("12.0000"), Decimal("0.020000"))


def test_override_on_update_only_when_changed() -> None:
    old = annotated(**{ANNOTATION_MONTHLY: "100"})
    same = copy.deepcopy(old)
    same["spec"]["replicas"] = 4  # 4 x 2.6096547578125 = 10.4386 - 7.8290 = 2.6096
    unchanged = price_change("UPDATE", same, old, BOOK)
    assert not unchanged.overridden and unchanged.monthly_delta_usd == Decimal("2.6096")
    changed = copy.deepcopy(same)
    changed["metadata"]["annotations"][ANNOTATION_MONTHLY] = "40"
    assert price_change("UPDATE", changed, old, BOOK).monthly_delta_usd == Decimal("40.0000")
    # DELETE ignores the (creation-time) override and credits the estimate
    assert price_change("DELETE", None, old, BOOK).monthly_delta_usd == Decimal("-7.8290")


@pytest.mark.parametrize("name", [ANNOTATION_MONTHLY, ANNOTATION_HOURLY])
@pytest.mark.parametrize("raw", ["abc", "-1", "NaN", "Infinity", "-Infinity", "1e13", "1000000000001", "", 5,
                                 True, ["1"]])
def test_malformed_override_rejected(name: str, raw: object) -> None:
    with pytest.raises(PricingError, match=name):
        price_change("CREATE", annotated(**{name: raw}), None, BOOK)


def test_hourly_override_overflowing_month_rejected() -> None:
    with pytest.raises(PricingError, match=ANNOTATION_HOURLY):
        price_change("CREATE", annotated(**{ANNOTATION_HOURLY: "1e11"}), None, BOOK)


# ---------------------------------------------------------------- price book


def book_mapping(defaults: dict[str, Any] | None = None,
                 clusters: dict[str, Any] | None = None) -> dict[str, Any]:
    base = yaml.safe_load((REPO / "valdrix/pricing/data/kubernetes_prices.yaml").read_text(encoding="utf-8"))
    base["defaults"].update(defaults or {})
    base["clusters"] = clusters or {}
    return base  # type: ignore[no-any-return]


def test_default_book_figures() -> None:
    rates = BOOK.defaults.rates
    assert (rates.cpu_per_vcpu_hour, rates.memory_per_gib_hour, rates.gpu_per_gpu_hour) == (CPU, RAM, GPU)
    assert BOOK.defaults.storage_per_gib_month == STORAGE == q4(Decimal("0.00005479452") * H)
    assert BOOK.defaults.load_balancer_per_month == LB and BOOK.defaults.daemonset_node_count == 3
    assert PriceBook.from_mapping(book_mapping()).digest == BOOK.digest


def test_node_pool_and_cluster_overrides() -> None:
    book = PriceBook.from_mapping(book_mapping(clusters={"prod": {
        "cpu_per_vcpu_hour": "0.04", "daemonset_node_count": 10, "load_balancer_per_month": "20",
        "node_pools": {"a100": {"gpu_per_gpu_hour": "3.00"}, "spot": {"cpu_per_vcpu_hour": "0.01"}},
        "node_pool_label_keys": ["cloud.google.com/gke-nodepool", "karpenter.sh/nodepool", "team.io/pool"],
    }}))
    trainer = fixture("kubectl-generated/deployment-gpu-trainer.json")
    trainer["spec"]["template"]["spec"]["nodeSelector"] = {"cloud.google.com/gke-nodepool": "a100"}
    cost = price_object(trainer, book, cluster="prod")
    # 2 x (4 x 0.04 + 16 x 0.004237 + 1 x 3.00) x 730 = 2 x 3.227792 x 730 = 4712.57632
    assert cost.monthly_usd == Decimal("4712.5763")
    assert price_object(trainer, BOOK).monthly_usd == Decimal("1670.5846")  # default cluster unaffected
    trainer["spec"]["template"]["spec"]["nodeSelector"] = {"team.io/pool": "spot"}
    # configured label key: 2 x (4 x 0.01 + 16 x 0.004237 + 0.95) x 730 = 2 x 1.057792 x 730 = 1544.37632
    assert price_object(trainer, book, cluster="prod").monthly_usd == Decimal("1544.3763")
    del trainer["spec"]["template"]["spec"]["nodeSelector"]
    trainer["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["spot"]}]}]}}}
    assert price_object(trainer, book, cluster="prod").monthly_usd == Decimal("1544.3763")
    trainer["spec"]["template"]["spec"]["affinity"] = None
    trainer["spec"]["template"]["spec"]["nodeSelector"] = {"karpenter.sh/nodepool": "unknown"}
    unknown_pool = price_object(trainer, book, cluster="prod")
    assert any("no price override" in n for n in unknown_pool.notes)
    ds = request("kubewarden__daemonset_create.request.json")["object"]
    assert price_object(ds, book, cluster="prod").replicas == 10
    lb = fixture("kubectl-generated/service-loadbalancer.json")
    assert price_object(lb, book, cluster="prod").monthly_usd == 20
    assert "no price overrides" in price_object(lb, book, cluster="staging").notes[0]


def test_storage_class_overrides() -> None:
    book = PriceBook.from_mapping(book_mapping(
        defaults={"storage_classes": {"managedssd": "0.15"}, "default_storage_class": "standard"},
        clusters={"prod": {"storage_classes": {"fast": "0.17", "standard": "0.05"}}}))
    # beta annotation picks managedssd: 5 GiB x 0.15
    managed = fixture("examples__pvc-azure-managed-ssd-beta-annotation.yaml")
    assert price_object(managed, book).monthly_usd == Decimal("0.7500")
    # no class -> default_storage_class "standard" (0.05 in prod, unpriced -> 0.04 elsewhere)
    no_class = fixture("examples__tf-serving-pvc-no-storageclass.yaml")
    assert price_object(no_class, book, cluster="prod").monthly_usd == Decimal("0.0500")
    assert price_object(no_class, book).monthly_usd == Decimal("0.0400")
    # cassandra VCT via beta annotation "fast": 3 x (14.631025 + 1 x 0.17) = 44.403075
    cassandra = price_object(fixture("examples__cassandra-statefulset-vct.yaml"), book, cluster="prod")
    assert cassandra.monthly_usd == Decimal("44.4031") and cassandra.storage_monthly_usd == Decimal("0.5100")
    pvc = request("kubewarden__pvc_create_storageclass.request.json")["object"]
    assert price_object(pvc, book, cluster="prod").monthly_usd == Decimal("0.6800")  # 4 x 0.17


def test_generic_ephemeral_volume_is_priced_per_pod() -> None:
    spec = {"containers": [c("a")], "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
        "spec": {"storageClassName": "x", "resources": {"requests": {"storage": "10Gi"}}}}}}]}
    dep = {"kind": "Deployment", "spec": {"replicas": 2, "template": {"spec": spec}}}
    assert price_object(dep, BOOK).monthly_usd == Decimal("0.8000")  # 2 x 10 GiB x 0.04


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 2}, "version"),
    ({"surprise": 1}, "surprise"),
    ({"defaults": {"cpu_per_vcpu_hour": "-1"}}, "cpu_per_vcpu_hour"),
    ({"defaults": {"cpu_per_vcpu_hour": "cheap"}}, "cpu_per_vcpu_hour"),
    ({"defaults": {"cpu_per_vcpu_hour": None}}, "cpu_per_vcpu_hour"),
    ({"defaults": {"daemonset_node_count": "3"}}, "daemonset_node_count"),
    ({"defaults": {"gpu_per_gpu_hour": True}}, "gpu_per_gpu_hour"),
    ({"clusters": {"prod": {"node_pools": {"a": {"storage_per_gib_month": "1"}}}}}, "storage_per_gib_month"),
    ({"clusters": {"prod": {"cpu": "1"}}}, "clusters.prod.cpu"),
    ({"clusters": {"prod": {"storage_classes": {"fast": "Infinity"}}}}, "fast"),
])
def test_invalid_price_book(change: dict[str, Any], message: str) -> None:
    data = book_mapping()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(PriceBookError, match=message):
        PriceBook.from_mapping(data)


def test_price_book_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    # unquoted YAML floats are read back as the decimal literal written
    path.write_text("version: 1\ndefaults:\n  cpu_per_vcpu_hour: 0.1\n  memory_per_gib_hour: 0.01\n"
                    "  gpu_per_gpu_hour: 1\n  storage_per_gib_month: 0.1\n  load_balancer_per_month: 10\n"
                    "  daemonset_node_count: 2\n  job_runtime_hours: 2\n  gpu_resources: [nvidia.com/gpu]\n"
                    "  node_pool_label_keys: []\n", encoding="utf-8")
    book = PriceBook.load(path)
    assert book.defaults.rates.cpu_per_vcpu_hour == Decimal("0.1")
    assert price_object(pod({"containers": [c("a", {"cpu": "1"})]}), book).monthly_usd == Decimal("73.0000")
    with pytest.raises(PriceBookError, match="cannot be read"):
        PriceBook.load(tmp_path / "missing.yaml")
    path.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(PriceBookError):
        PriceBook.load(path)
    path.write_text("version: 1\ndefaults: {}\n", encoding="utf-8")
    with pytest.raises(PriceBookError, match="defaults must set cpu_per_vcpu_hour"):
        PriceBook.load(path)


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("obj", [
    None, [], "Deployment", {}, {"kind": 3}, {"kind": ""},
    {"kind": "Deployment", "spec": {"replicas": "3", "template": {"spec": {"containers": []}}}},
    {"kind": "Deployment", "spec": {"replicas": -1}},
    {"kind": "Deployment", "spec": {"replicas": True}},
    {"kind": "Deployment", "spec": {}},
    {"kind": "Deployment", "spec": {"template": {"spec": {"containers": {}}}}},
    {"kind": "Pod", "spec": {"containers": []}},
    {"kind": "Pod", "spec": {"containers": ["nginx"]}},
    {"kind": "Pod", "spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}},
    {"kind": "Pod", "spec": {"containers": [{"resources": {"requests": {"cpu": "-1"}}}]}},
    {"kind": "Pod", "spec": {"containers": [{"resources": {"requests": ["cpu"]}}]}},
    {"kind": "Pod", "spec": {"containers": [{"resources": {"requests": {"cpu": "8Ei"}}}]}},
    {"kind": "Pod", "metadata": {"ownerReferences": "rs"}, "spec": {"containers": [{}]}},
    {"kind": "Pod", "metadata": [], "spec": {"containers": [{}]}},
    {"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {}}}},
    {"kind": "PersistentVolumeClaim",
     "spec": {"storageClassName": 5, "resources": {"requests": {"storage": "1"}}}},
    {"kind": "Service", "spec": {"type": ["LoadBalancer"]}},
    {"kind": "CronJob", "spec": {"schedule": "never"}},
    {"kind": "CronJob", "spec": {}},
    {"kind": "Job", "spec": {"parallelism": 1.5, "template": {"spec": {"containers": [{}]}}}},
    {"kind": "Deployment", "spec": {"replicas": 2**31 - 1, "template": {"spec": {"containers": [
        {"resources": {"requests": {"nvidia.com/gpu": "1000000"}}}]}}}},
])
def test_malformed_objects_raise_pricing_error(obj: Any) -> None:
    with pytest.raises(PricingError):
        price_object(obj, BOOK)


KEYS = st.sampled_from([
    "kind", "spec", "metadata", "annotations", "ownerReferences", "controller", "template", "containers",
    "initContainers", "resources", "requests", "limits", "cpu", "memory", "nvidia.com/gpu", "replicas",
    "overhead", "volumeClaimTemplates", "storage", "storageClassName", "type", "schedule", "jobTemplate",
    "parallelism", "completions", "maxReplicas", "minReplicas", "nodeSelector", "volumes", "ephemeral",
    "volumeClaimTemplate", "restartPolicy", "concurrencyPolicy", "affinity", "name", ANNOTATION_MONTHLY,
    ANNOTATION_HOURLY, ANNOTATION_RUNTIME,
])
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.decimals(allow_nan=True),
    st.sampled_from(["100m", "1Gi", "1e3", "1E", "9Ei", "LoadBalancer", "* * * * *", "@every 1s", "Always",
                     "Forbid", "-1", "NaN", "1e999", "5", "0.5", "Deployment", "Pod"]),
)
JUNK = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(KEYS, inner, max_size=5)), max_leaves=30)
KINDS = st.sampled_from(["Pod", "Deployment", "StatefulSet", "ReplicaSet", "ReplicationController",
                         "DaemonSet", "Job", "CronJob", "PersistentVolumeClaim", "Service",
                         "HorizontalPodAutoscaler", "Scale", "ConfigMap"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=KINDS, spec=JUNK, metadata=JUNK, junk=JUNK,
       op=st.sampled_from(["CREATE", "UPDATE", "DELETE", "X"]))
def test_junk_only_raises_pricing_error(kind: str, spec: Any, metadata: Any, junk: Any, op: str) -> None:
    for obj in ({"kind": kind, "spec": spec, "metadata": metadata}, junk):
        with contextlib.suppress(PricingError):
            assert price_object(obj, BOOK, target_pod_monthly=Decimal("1.5")).monthly_usd >= 0
    with contextlib.suppress(PricingError):
        price_change(op, {"kind": kind, "spec": spec, "metadata": metadata}, junk, BOOK)


# ---------------------------------------------------------------- real kubectl client


def kubectl(*args: str, stdin: str | None = None) -> dict[str, Any]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    done = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_kubectl_generated_objects(tmp_path: Path) -> None:
    deployment = kubectl("create", "deployment", "x", "--image=nginx", "--replicas=4", "--dry-run=client",
                         "-o", "json")
    bare = price_object(deployment, BOOK)
    assert bare.replicas == 4 and bare.monthly_usd == 0 and bare.cost_impact
    manifest = tmp_path / "x.json"
    manifest.write_text(json.dumps(deployment), encoding="utf-8")
    sized = kubectl("set", "resources", "-f", str(manifest), "--local", "--requests=cpu=250m,memory=512Mi",
                    "-o", "json")
    # 4 x (0.25 x 0.031611 + 0.5 x 0.004237) x 730 = 4 x 7.3155125 = 29.26205 -> 29.2620 (half-even)
    assert price_object(sized, BOOK).monthly_usd == Decimal("29.2620")
    assert price_change("UPDATE", sized, deployment, BOOK).monthly_delta_usd == Decimal("29.2620")
    job = kubectl("create", "job", "pi", "--image=perl:5.34", "--dry-run=client", "-o", "json", "--",
                  "perl", "-v")
    assert price_object(job, BOOK).kind == "Job"
    cron = kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=*/30 * * * *",
                   "--dry-run=client", "-o", "json", "--", "date")
    assert "1460.00 runs/month" in " ".join(price_object(cron, BOOK).notes)
    lb = kubectl("create", "service", "loadbalancer", "web", "--tcp=80:8080", "--dry-run=client", "-o",
                 "json")
    assert price_change("CREATE", lb, None, BOOK).monthly_delta_usd == LB
