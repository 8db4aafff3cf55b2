"""The drift-response policy: its Rego tests reach every line and rule, and its examples decide as they are named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tasks.drift_policy import decide_drift
from tasks.policy_testing import check_policies, run_policy_tests
from tests.policy_helpers import POLICY_DIR, example_paths

DRIFT_EXAMPLES = sorted((POLICY_DIR / "examples" / "drift").glob("*.json"))


def test_the_tests_reach_every_line_of_the_drift_policy() -> None:
    # given the Rego tests
    # when they run with coverage
    result = run_policy_tests(POLICY_DIR)
    # then every drift test passes and every evaluable line of drift.rego was reached
    drift_tests = [t for t in result.tests if t.package == "scoregate.drift_test"]
    assert len(drift_tests) >= 30 and all(t.status == "pass" for t in drift_tests)
    coverage = next(c for c in result.coverage if c.file.endswith("drift.rego") and "_test" not in c.file)
    assert coverage.share == 1.0, coverage.not_covered


def test_every_reason_the_drift_policy_gives_is_asserted_by_a_rego_test() -> None:
    # given the reason rules drift.rego can emit
    policy = (POLICY_DIR / "drift.rego").read_text(encoding="utf-8")
    tests = (POLICY_DIR / "drift_test.rego").read_text(encoding="utf-8")
    rules = set(re.findall(r'"rule": "([a-z_.]+)"', policy))
    # when the test file is searched for them
    # then each one is named there
    assert {"drift.features", "drift.score_shift", "hysteresis.pending", "cooldown.active", "input.invalid"} <= rules
    assert [rule for rule in sorted(rules) if f'"{rule}"' not in tests] == []


@pytest.mark.parametrize("path", DRIFT_EXAMPLES, ids=lambda p: p.stem)
def test_each_drift_example_gets_the_action_its_name_promises(path: Path) -> None:
    # given an example policy input named <action>_*.json
    document = json.loads(path.read_text(encoding="utf-8"))
    # when the shipped policies decide it
    decision = decide_drift(POLICY_DIR, document)
    # then the action is the name's prefix, with reasons and no error
    assert decision.error is None
    assert decision.action == path.stem.split("_", 1)[0], decision.reasons
    assert decision.reasons


def test_drift_examples_cover_every_action_and_stay_out_of_the_bundle_check() -> None:
    # given the drift examples in their own folder
    actions = {path.stem.split("_", 1)[0] for path in DRIFT_EXAMPLES}
    # when the policy check runs (it validates promotion decision bundles in examples/ only)
    result = check_policies(POLICY_DIR)
    # then all three actions have an example, and the check neither sees them nor fails
    assert actions == {"none", "retrain", "rollback"}
    assert result.ok and not any("drift" in item.name for item in result.items)
    assert all(path.parent.name == "examples" for path in example_paths())
