"""Containers without requests or limits: priced from the namespace's mirrored LimitRange, else the policy's
`kubernetes.default_container_resources`, and flagged with `container_resources_defaulted` (issue 23).

Hand prices use the default book: 0.031611 per vCPU-hour, 0.004237 per GiB-hour, 730 hours per month.
Policy defaults 100m / 128Mi: 0.1 x 0.031611 + 0.125 x 0.004237 = 0.003690725 per container-hour
= 2.69422925 per container-month.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.conftest import FIXTURES
from tests.unit.admission.test_translate import BOOK, DEFAULTS, WHERE, envelope, review
from valdrix.admission import translate
from valdrix.admission.schemas import parse_review
from valdrix.decisions import engine
from valdrix.policies.schemas import PolicyDocument
from valdrix.pricing.kubernetes import PriceBook, PriceBookError

OBJECTS = FIXTURES / "k8s-objects"


def _object(name: str, index: int = 0) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((OBJECTS / name).read_text()) if d]
    doc: dict[str, Any] = docs[index]
    return doc


def _book_with_limit_range(namespace: str, limit_range: dict[str, Any]) -> PriceBook:
    data = yaml.safe_load((FIXTURES.parents[2] / "valdrix" / "pricing" / "data" / "kubernetes_prices.yaml")
                          .read_text())
    data["defaults"]["limit_ranges"] = {namespace: limit_range}
    return PriceBook.from_mapping(data)


@pytest.mark.parametrize(("name", "monthly", "containers"), [
    # 1 replica x 1 container
    ("examples__tf-serving-deployment-no-resources.yaml", "2.6942", 1),
    # 4 replicas x 1 container + the claim templates' 1.60 of storage
    ("examples__minio-statefulset-vct-no-resources.yaml", "12.3769", 1),
    # an init container and a container, both defaulted; the init phase costs no more than the running one
    ("examples__javaweb-pod-initcontainer.yaml", "2.6942", 2),
])
def test_unresourced_fixture_is_priced_from_policy_defaults(name: str, monthly: str, containers: int) -> None:
    req = review(_object(name)).request
    # Without the tenant's policy the price is not known yet: never a free fast path.
    pending = translate.translate(req, BOOK, WHERE)
    assert pending == translate.NeedsDefaults(containers)
    outcome = translate.translate(req, BOOK, WHERE, DEFAULTS)
    assert isinstance(outcome, translate.Priced)
    assert outcome.inp.monthly_delta == Decimal(monthly)
    assert outcome.inp.metadata["pricing"] == {"defaulted_containers": containers}
    after = outcome.inp.metadata["cost_breakdown"]["after"]
    assert after["defaulted_containers"] == containers
    assert any("priced at the default" in n and "(policy default)" in n for n in after["notes"])


def test_policy_defaults_change_the_price() -> None:
    bigger = translate.container_defaults(PolicyDocument.model_validate(
        {"kubernetes": {"default_container_resources": {"cpu": "1", "memory": "1Gi"}}}))
    outcome = translate.translate(review(_object("examples__tf-serving-deployment-no-resources.yaml")).request,
                                  BOOK, WHERE, bigger)
    # 1 x 0.031611 + 1 x 0.004237 = 0.035848 /h x 730 = 26.16904
    assert isinstance(outcome, translate.Priced) and outcome.inp.monthly_delta == Decimal("26.1690")


def test_mirrored_limit_range_wins_over_policy_defaults() -> None:
    book = _book_with_limit_range("ml", {"defaultRequest": {"cpu": "500m"}, "default": {"cpu": "2", "memory": "2Gi"}})
    req = review(_object("examples__tf-serving-deployment-no-resources.yaml"), namespace="ml").request
    # cpu from defaultRequest (0.5), memory from the default limit (2Gi, which a missing request copies):
    # 0.5 x 0.031611 + 2 x 0.004237 = 0.0242795 /h x 730 = 17.724035
    for defaults in (None, DEFAULTS):  # the LimitRange alone settles it: no policy needed
        outcome = translate.translate(req, book, WHERE, defaults)
        assert isinstance(outcome, translate.Priced)
        assert outcome.inp.monthly_delta == Decimal("17.7240")
        notes = outcome.inp.metadata["cost_breakdown"]["after"]["notes"]
        assert any("cpu (LimitRange), memory (LimitRange)" in n for n in notes)
    # Another namespace does not see it.
    other = translate.translate(review(_object("examples__tf-serving-deployment-no-resources.yaml"),
                                       namespace="web").request, book, WHERE)
    assert isinstance(other, translate.NeedsDefaults)


def test_only_the_missing_resource_is_defaulted() -> None:
    obj = _object("examples__tf-serving-deployment-no-resources.yaml")
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
    outcome = translate.translate(review(obj).request, BOOK, WHERE, DEFAULTS)
    # 2 x 0.031611 + 0.125 x 0.004237 = 0.063751625 /h x 730 = 46.53868625
    assert isinstance(outcome, translate.Priced) and outcome.inp.monthly_delta == Decimal("46.5387")
    assert outcome.inp.metadata["pricing"] == {"defaulted_containers": 1}
    assert any("memory (policy default)" in n and "cpu" not in n.split("for ")[1]
               for n in outcome.inp.metadata["cost_breakdown"]["after"]["notes"])


def test_fully_resourced_objects_are_not_flagged() -> None:
    data = json.loads((FIXTURES / "admission-reviews" / "kubewarden__deployment_create_with_requests.request.json")
                      .read_text())
    data["object"]["spec"]["replicas"] = 2  # the fixture runs 0 replicas
    req = parse_review(json.dumps(envelope(data)).encode()).request
    outcome = translate.translate(req, BOOK, WHERE)  # priced without any defaults
    assert isinstance(outcome, translate.Priced) and outcome.inp.monthly_delta > 0
    assert translate.translate(req, BOOK, WHERE, DEFAULTS) == outcome
    assert "pricing" not in outcome.inp.metadata
    assert outcome.inp.metadata["cost_breakdown"]["after"]["defaulted_containers"] == 0


def test_zero_replicas_without_resources_costs_nothing_once_defaults_are_known() -> None:
    data = json.loads((FIXTURES / "admission-reviews" / "kubewarden__deployment_create_without_resources.request.json")
                      .read_text())
    req = parse_review(json.dumps(envelope(data)).encode()).request
    assert isinstance(translate.translate(req, BOOK, WHERE), translate.NeedsDefaults)
    outcome = translate.translate(req, BOOK, WHERE, DEFAULTS)
    assert isinstance(outcome, translate.Fast) and outcome.why == "non_positive_delta"


def test_annotation_override_needs_no_defaults() -> None:
    obj = _object("examples__tf-serving-deployment-no-resources.yaml")
    obj["metadata"]["annotations"] = {"valdrix.io/estimated-monthly-delta-usd": "40"}
    outcome = translate.translate(review(obj).request, BOOK, WHERE)
    assert isinstance(outcome, translate.Priced) and outcome.inp.monthly_delta == Decimal("40.0000")
    assert "pricing" not in outcome.inp.metadata


def test_every_shared_fixture_is_decided_once_defaults_are_known() -> None:
    from tests.unit.admission.test_translate import k8s_objects

    needing = 0
    for _name, obj in k8s_objects():
        req = review(obj).request
        first = translate.translate(req, BOOK, WHERE)
        if isinstance(first, translate.NeedsDefaults):
            needing += 1
            assert not isinstance(translate.translate(req, BOOK, WHERE, DEFAULTS), translate.NeedsDefaults)
    assert needing >= 3


def test_engine_flags_defaulted_containers_without_changing_the_decision() -> None:
    policy = PolicyDocument()
    funding = engine.Funding(budget=None)
    base = {"source": "k8s_admission", "project_id": "p", "environment": "nonprod", "action": "admission.create",
            "resource_reference": "deployments/default/x", "monthly_delta": Decimal("2.6942"),
            "hourly_delta": Decimal("0.003691")}
    plain = engine.evaluate(engine.make_input(**base), policy, 1, funding, _now())
    flagged = engine.evaluate(engine.make_input(**base, metadata={"pricing": {"defaulted_containers": 2}}), policy, 1,
                              funding, _now())
    assert "container_resources_defaulted" in flagged.reasons
    assert "container_resources_defaulted" not in plain.reasons
    assert flagged.decision == plain.decision


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("bad", [{"cpu": "lots"}, {"memory": "-1Gi"}, {"cpu": ""}, {"gpu": "1"}])
def test_policy_rejects_bad_container_defaults(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        PolicyDocument.model_validate({"kubernetes": {"default_container_resources": bad}})


def test_price_book_rejects_a_bad_limit_range() -> None:
    with pytest.raises(PriceBookError, match="limit_ranges"):
        _book_with_limit_range("ml", {"defaultRequest": {"cpu": "many"}})
    with pytest.raises(PriceBookError, match="limit_ranges"):
        _book_with_limit_range("ml", {"max": {"cpu": "1"}})
