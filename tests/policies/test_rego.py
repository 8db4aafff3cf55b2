from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.decision import DecisionBundle
from tasks.policy import InProcessOpa
from tasks.policy_testing import check_policies, format_check_result, format_test_result, run_policy_tests
from tests.policy_helpers import POLICY_DIR, example_paths


def test_every_rego_test_passes() -> None:
    # given the shipped policies and their *_test.rego files
    # when the runner evaluates every test_ rule with the real engine
    result = run_policy_tests(POLICY_DIR)
    # then there are tests, all pass, and the summary line says so
    assert result.load_error is None
    assert len(result.tests) > 0
    failures = [t for t in result.tests if t.status != "pass"]
    assert failures == [], "\n".join(format_test_result(result))
    assert format_test_result(result)[-1] == f"{len(result.tests)} passed, 0 failed"


def test_the_tests_reach_every_line_of_the_promotion_policy() -> None:
    # given the Rego tests
    # when they run with coverage
    result = run_policy_tests(POLICY_DIR)
    # then every evaluable line of promotion.rego was reached by some test
    promotion = next(c for c in result.coverage if c.file.endswith("promotion.rego"))
    assert promotion.share == 1.0, promotion.not_covered


def test_every_rule_id_has_a_rego_test() -> None:
    # given the rule ids the promotion policy can emit
    policy = (POLICY_DIR / "promotion.rego").read_text(encoding="utf-8")
    tests = (POLICY_DIR / "promotion_test.rego").read_text(encoding="utf-8")
    literal = set(re.findall(r'"rule": "([a-z_.]+)"', policy))
    prefixes = set(re.findall(r'"rule": sprintf\("(?:%s\.)?([a-z_]+)(?:\.%s)?"', policy))
    # when the test file is searched for them
    # then each literal id is asserted on, and each templated family is exercised
    assert {"bundle.schema_version", "freeze_window", "fairness.gap"} <= literal
    assert {"metric_floor", "metric_ceiling", "regression", "lineage", "requires_staging", "four_eyes"} <= prefixes
    assert [rule for rule in sorted(literal) if f'"{rule}"' not in tests] == []
    assert [prefix for prefix in sorted(prefixes) if prefix not in tests] == []


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_each_example_gets_the_decision_its_name_promises(path: Path) -> None:
    # given an example bundle named allow_* or deny_*
    bundle = DecisionBundle.model_validate_json(path.read_text(encoding="utf-8"))
    # when the shipped policies decide it
    with InProcessOpa(POLICY_DIR) as engine:
        decision = engine.decide(bundle)
    # then the outcome matches the prefix
    assert path.name.startswith(("allow_", "deny_"))
    assert decision.allow is path.name.startswith("allow_"), decision.violations


def test_examples_cover_both_outcomes() -> None:
    # given the example folder
    names = [path.name for path in example_paths()]
    # when the prefixes are counted
    # then there are allow and deny examples
    assert sum(name.startswith("allow_") for name in names) >= 2
    assert sum(name.startswith("deny_") for name in names) >= 3


def test_policy_check_passes() -> None:
    # given the shipped policy folder
    # when it is checked (compile, schema up to date, examples valid and decided as named)
    result = check_policies(POLICY_DIR)
    # then every item passes
    assert result.ok, "\n".join(format_check_result(result))
    assert result.passed == 2 + len(example_paths())
