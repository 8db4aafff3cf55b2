from __future__ import annotations

import json
from pathlib import Path

from tasks.policy_testing import (
    check_policies,
    format_check_result,
    format_test_result,
    run_policy_tests,
    summary_line,
)
from tests.policy_helpers import copy_policies

POLICY = """package demo

default allow := false

allow if input.role == "admin"

label := "big" if input.size > 10

label := "small" if input.size <= 10
"""

TESTS = """package demo_test

import data.demo

test_admin_allowed if demo.allow with input as {"role": "admin"}

test_guest_denied if not demo.allow with input as {"role": "guest"}

test_wrong_expectation if demo.allow with input as {"role": "guest"}

test_raises if 1 / 0 == 1

test_false := false

helper := 1
"""


def demo_policies(folder: Path, tests: str = TESTS) -> Path:
    """A tiny policy folder with passing, failing, false and erroring tests."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo.rego").write_text(POLICY, encoding="utf-8")
    (folder / "demo_test.rego").write_text(tests, encoding="utf-8")
    return folder


def test_each_test_rule_gets_its_own_outcome(tmp_path: Path) -> None:
    # given two passing tests, one failing, one erroring and one false
    folder = demo_policies(tmp_path / "policies")
    # when the runner evaluates them with the real engine
    result = run_policy_tests(folder)
    # then every test_ rule (and nothing else) is reported with its outcome and line
    outcomes = {test.name: (test.status, test.line) for test in result.tests}
    assert outcomes == {
        "test_admin_allowed": ("pass", 5),
        "test_guest_denied": ("pass", 7),
        "test_wrong_expectation": ("fail", 9),
        "test_raises": ("error", 11),
        "test_false": ("fail", 13),
    }
    assert (result.passed, result.failed, result.ok) == (2, 3, False)
    messages = {test.name: test.message for test in result.tests}
    assert "undefined" in messages["test_wrong_expectation"]
    assert "divide by zero" in messages["test_raises"]
    assert "False" in messages["test_false"]


def test_coverage_reports_lines_no_test_reached(tmp_path: Path) -> None:
    # given tests that never evaluate the `label` rules
    folder = demo_policies(tmp_path / "policies")
    # when the runner collects coverage
    result = run_policy_tests(folder)
    # then the policy file is partly covered, and the uncovered lines are the label rules
    policy = next(c for c in result.coverage if c.file.endswith("demo.rego"))
    assert 0 < policy.share < 1
    assert {7, 9} <= set(policy.not_covered)
    assert 5 not in policy.not_covered


def test_output_ends_with_the_summary_line(tmp_path: Path) -> None:
    # given a run with passes and failures
    result = run_policy_tests(demo_policies(tmp_path / "policies"))
    # when it is formatted
    lines = format_test_result(result)
    # then each test has a line and the last line is exactly "N passed, N failed"
    assert lines[-1] == "2 passed, 3 failed"
    assert summary_line(2, 3) == "2 passed, 3 failed"
    assert sum(1 for line in lines if line.startswith(("PASS", "FAIL", "ERROR"))) == 5
    assert any(line.startswith("ERROR") and "test_raises" in line for line in lines)
    assert any("coverage" in line for line in lines)


def test_a_test_file_that_does_not_parse_fails_the_run(tmp_path: Path) -> None:
    # given a test module in pre-v1 syntax
    folder = demo_policies(tmp_path / "policies", tests="package demo_test\ntest_x { true }\n")
    # when the runner loads it
    result = run_policy_tests(folder)
    # then nothing runs, the error names the file and line, and the run cannot pass
    assert result.tests == ()
    assert result.load_error is not None
    assert "demo_test.rego:2" in result.load_error
    assert format_test_result(result)[-1] == "0 passed, 1 failed"
    assert not result.ok


def test_check_passes_on_a_faithful_copy(tmp_path: Path) -> None:
    # given an unmodified copy of the shipped policies
    folder = copy_policies(tmp_path / "policies")
    # when it is checked
    result = check_policies(folder)
    # then every item passes: compile, schema, each example
    assert result.ok, format_check_result(result)
    names = [item.name for item in result.items]
    assert names[:2] == ["compile", "decision_bundle.schema.json"]
    assert any(name.startswith("examples/deny_") for name in names)


def test_check_catches_misnamed_invalid_and_stale_files(tmp_path: Path) -> None:
    # given a copy where an allow example is renamed deny_, another breaks the schema, and the schema is stale
    folder = copy_policies(tmp_path / "policies")
    examples = folder / "examples"
    (examples / "allow_staging_first_promotion.json").rename(examples / "deny_staging_first_promotion.json")
    broken = json.loads((examples / "allow_production_with_champion.json").read_text(encoding="utf-8"))
    broken["environment"] = "qa"
    (examples / "allow_production_with_champion.json").write_text(json.dumps(broken), encoding="utf-8")
    schema = folder / "decision_bundle.schema.json"
    schema.write_text(schema.read_text(encoding="utf-8").replace("Everything the promotion", "All"), encoding="utf-8")
    # when the folder is checked
    result = check_policies(folder)
    # then exactly those three items fail, each saying why
    failures = {item.name: item.detail for item in result.items if not item.ok}
    assert set(failures) == {
        "decision_bundle.schema.json",
        "examples/deny_staging_first_promotion.json",
        "examples/allow_production_with_champion.json",
    }
    assert "out of date" in failures["decision_bundle.schema.json"]
    assert "expected deny, policy says allow" in failures["examples/deny_staging_first_promotion.json"]
    assert "environment" in failures["examples/allow_production_with_champion.json"]
    assert format_check_result(result)[-1] == f"{result.passed} passed, 3 failed"


def test_check_reports_a_policy_that_does_not_compile(tmp_path: Path) -> None:
    # given a copy whose policy has an unsafe variable
    folder = copy_policies(tmp_path / "policies")
    (folder / "broken.rego").write_text("package scoregate.broken\nx := y if y > 1\n", encoding="utf-8")
    # when it is checked
    result = check_policies(folder)
    # then the compile item fails naming the file
    compile_item = result.items[0]
    assert not compile_item.ok
    assert "broken.rego:2" in compile_item.detail
    assert not result.ok
