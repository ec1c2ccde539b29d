"""Dependencies run one way: the policy document does not import the gate that reads it."""

from __future__ import annotations

import subprocess
import sys

# Validating a routing rule normalises its environments: the policy document must do that without the gate.
_VALIDATE = ("import sys; from valdrix.policies.schemas import PolicyDocument; "
             "doc = PolicyDocument.model_validate({'approval': {'routing_rules': [{'rule_id': 'r', "
             "'environments': ['Production'], 'required_permission': 'approve:prod'}]}}); "
             "assert doc.approval.routing_rules[0].environments == ('prod',); ")


def test_policy_documents_validate_without_the_decision_engine() -> None:
    probe = _VALIDATE + "sys.exit(any(name.startswith('valdrix.decisions') for name in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_the_engine_reads_the_policy() -> None:
    probe = "import sys, valdrix.decisions.engine; sys.exit('valdrix.policies.schemas' not in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
