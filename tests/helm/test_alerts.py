"""The chart's PrometheusRule, checked and unit-tested with the real promtool.

promtool comes from the Debian `prometheus` package (scripts/ensure-promtool.sh, run by `make test`).
Without it the tests skip locally but FAIL when the CI environment variable is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.test_chart import ROOT, by_kind, one, render

ALERT_TESTS = Path(__file__).resolve().parent / "alerts" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/valdrix/valdrix-gate/blob/main/docs/runbooks"
# The runbook's three infrastructure failure reasons (§3.4) and the failure_type each is counted under.
FAILURE_REASONS = {"gate_timeout": "timeout", "gate_lock_timeout": "lock_timeout",
                   "gate_evaluation_error": "evaluation_error"}


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-promtool.sh")], check=False, cwd=ROOT)
        found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not available (scripts/ensure-promtool.sh failed)")
        pytest.skip("promtool not available")
    return found


@pytest.fixture(scope="session")
def rule(helm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    values = tmp_path_factory.mktemp("alerts") / "monitoring.yaml"
    values.write_text("monitoring:\n  enabled: true\nworker:\n  enabled: true\n")
    return one(render(helm, values), "PrometheusRule")


def _rules(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _workdir(rule: dict[str, Any], tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    return tmp_path


def test_promtool_check_rules(promtool: str, rule: dict[str, Any], tmp_path: Path) -> None:
    work = _workdir(rule, tmp_path)
    proc = subprocess.run([promtool, "check", "rules", str(work / "rules.yaml")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules(rule))} rules found" in proc.stdout


def test_promtool_unit_tests_pass(promtool: str, rule: dict[str, Any], tmp_path: Path) -> None:
    work = _workdir(rule, tmp_path)
    proc = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], capture_output=True, text=True,
                          timeout=120, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_fail_when_a_threshold_changes(promtool: str, helm: str, tmp_path: Path) -> None:
    """The firing cases really depend on the rule: a raised threshold makes them fail."""
    values = tmp_path / "v.yaml"
    values.write_text("monitoring:\n  enabled: true\n  prometheusRule:\n    gateFailuresPer10m: 50\n")
    work = _workdir(one(render(helm, values), "PrometheusRule"), tmp_path)
    proc = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], capture_output=True, text=True,
                          timeout=120, cwd=work)
    assert proc.returncode != 0
    assert "ValdrixGateTimeouts fires" in proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case(rule: dict[str, Any]) -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in _rules(rule)}
    assert alerts == firing == quiet


def test_every_alert_links_its_runbook(rule: dict[str, Any]) -> None:
    for r in _rules(rule):
        assert r["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}/{r['alert']}.md"
        page = RUNBOOKS / f"{r['alert']}.md"
        assert page.is_file(), f"missing {page}"
        text = page.read_text()
        for section in ("## What it means", "## How to confirm", "## What to do"):
            assert section in text, f"{page.name} lacks {section!r}"


def test_every_failure_reason_and_the_lock_metric_alert(rule: dict[str, Any]) -> None:
    exprs = [r["expr"] for r in _rules(rule)]
    for failure_type in FAILURE_REASONS.values():
        assert any(f'failure_type="{failure_type}"' in e for e in exprs), failure_type
    assert any("valdrix_ops_enforcement_gate_lock_events_total" in e and 'event=~"contended|timeout"' in e
               for e in exprs)
    # Every rule is scoped to the release's namespace.
    assert all('namespace="valdrix"' in e for e in exprs)


def test_monitoring_switch_controls_the_bundle(helm: str, tmp_path: Path) -> None:
    assert not by_kind(render(helm), "PrometheusRule")
    assert not by_kind(render(helm), "ServiceMonitor")
    values = tmp_path / "v.yaml"
    values.write_text("monitoring:\n  enabled: true\n  prometheusRule:\n    enabled: false\n")
    docs = render(helm, values)
    assert not by_kind(docs, "PrometheusRule")
    assert {d["metadata"]["name"] for d in by_kind(docs, "ServiceMonitor")} == {"valdrix-api"}
