from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.policy_commands import audit_verify, policy_check, policy_replay, policy_test
from tasks.audit import append_audit_record
from tasks.decision import DecisionBundle
from tasks.policy import InProcessOpa
from tasks.policy_replay import store_decision
from tests.policy_helpers import POLICY_DIR, copy_policies, example_paths


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def test_policy_test_command_passes_on_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    # given the shipped policies
    # when the command runs
    code = policy_test(POLICY_DIR)
    # then it exits 0 and ends with the summary line
    out = capsys.readouterr().out
    assert code == 0
    assert last_line(out).endswith(" passed, 0 failed")
    assert "coverage:" in out


def test_policy_test_command_fails_on_a_broken_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given a policy folder that does not parse
    folder = copy_policies(tmp_path / "policies")
    (folder / "promotion.rego").write_text("package scoregate.promotion\ndecision { true }\n", encoding="utf-8")
    # when the command runs
    code = policy_test(folder)
    # then it exits 2 and says nothing passed
    assert code == 2
    assert last_line(capsys.readouterr().out) == "0 passed, 1 failed"


def test_policy_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given the shipped policies, and a copy with a misnamed example
    folder = copy_policies(tmp_path / "policies")
    examples = folder / "examples"
    (examples / "deny_production_regression.json").rename(examples / "allow_production_regression.json")
    # when the command checks each
    good = policy_check(POLICY_DIR)
    good_out = capsys.readouterr().out
    bad = policy_check(folder)
    bad_out = capsys.readouterr().out
    # then the first passes and the second fails on that example
    assert (good, bad) == (0, 1)
    assert last_line(good_out).endswith(" passed, 0 failed")
    assert last_line(bad_out).endswith(" passed, 1 failed")
    assert "FAIL   examples/allow_production_regression.json" in bad_out


def test_policy_replay_command_writes_the_report_and_flags_flips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given stored decisions and policies with a stricter staging floor
    store = tmp_path / "decisions"
    with InProcessOpa(POLICY_DIR) as engine:
        for path in example_paths():
            bundle = DecisionBundle.model_validate_json(path.read_text(encoding="utf-8"))
            store_decision(store, bundle, engine.decide(bundle))
    folder = copy_policies(tmp_path / "policies")
    data = folder / "data" / "promotion.json"
    data.write_text(data.read_text().replace('"roc_auc": {"min": 0.80', '"roc_auc": {"min": 0.95'), encoding="utf-8")
    report = tmp_path / "out" / "replay.md"
    # when the command replays under the current and the stricter policies
    same = policy_replay(POLICY_DIR, store, None, None)
    capsys.readouterr()
    stricter = policy_replay(folder, store, datetime(2020, 1, 1, tzinfo=UTC), report)
    out = capsys.readouterr().out
    # then only the stricter replay exits 1, lists the flip and writes the Markdown report
    assert (same, stricter) == (0, 1)
    assert "FLIP" in out and "metric_floor.roc_auc" in out
    assert last_line(out) == f"{len(example_paths()) - 1} passed, 1 failed"
    assert "## Policy replay" in report.read_text(encoding="utf-8")


def test_audit_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given an intact log, then the same log with its first record edited
    log = tmp_path / "audit.jsonl"
    for version in ("1", "2"):
        append_audit_record(
            log, actor="ci", action="rollback", environment="production", model_name="m", model_version=version
        )
    intact = audit_verify(log)
    intact_out = capsys.readouterr().out
    log.write_text(log.read_text(encoding="utf-8").replace('"actor":"ci"', '"actor":"xx"', 1), encoding="utf-8")
    # when the command verifies each
    edited = audit_verify(log)
    edited_out = capsys.readouterr().out
    # then the edit is named and the exit code says so
    assert (intact, edited) == (0, 1)
    assert last_line(intact_out) == "2 passed, 0 failed"
    assert "FAIL  edited: line 1 (seq 1)" in edited_out
    assert last_line(edited_out) == "1 passed, 1 failed"
