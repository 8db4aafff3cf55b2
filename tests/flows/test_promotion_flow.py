"""Promotion end to end: real MLflow registry, the real OPA engine, a real bare git repository as the GitOps remote."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.audit import read_audit_records, verify_audit_log
from tasks.settings import Settings
from tests.flows.conftest import PROJECT_ROOT, home_at, run_cli

pytestmark = pytest.mark.usefixtures("trained")


@pytest.fixture(scope="module")
def lenient_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's Rego with staging thresholds a 20k-row test model can meet (policy data, not code, changes)."""
    folder = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", folder)
    data_file = folder / "data" / "promotion.json"
    data = json.loads(data_file.read_text(encoding="utf-8"))
    staging = data["environments"]["staging"]
    staging["metric_floors"] = {"roc_auc": {"min": 0.6, "bound": "ci_low"}}
    staging["max_fairness_gap"] = 1.0
    production = data["environments"]["production"]
    production["metric_floors"] = {"roc_auc": {"min": 0.6, "bound": "ci_low"}}
    production["max_fairness_gap"] = 1.0
    production["freeze_windows"] = []  # the test must not depend on today's date
    data_file.write_text(json.dumps(data), encoding="utf-8")
    return folder


@pytest.fixture
def home(trained: tuple[dict[str, Any], Settings]) -> Iterator[Settings]:
    _, settings = trained
    with home_at(settings.home) as current:
        yield current


def _branches(settings: Settings) -> list[str]:
    bare = settings.home / "gitops.git"
    if not bare.exists():
        return []
    out = subprocess.run(["git", "-C", str(bare), "branch", "--list"], capture_output=True, text=True, check=True)
    return [line.strip(" *") for line in out.stdout.splitlines()]


def _aliases(settings: Settings, name: str) -> dict[str, str]:
    from tasks.registry import mlflow_client

    return {
        alias: str(version) for alias, version in mlflow_client(settings).get_registered_model(name).aliases.items()
    }


def _promote(*extra: str, version: str = "1", env: str = "staging") -> tuple[int, dict[str, Any], str]:
    code, out, err = run_cli("promote", "--model-version", version, "--env", env, "--json", *extra)
    return code, (json.loads(out) if out.strip().startswith("{") else {}), err


def test_first_staging_promotion_commits_a_branch_and_moves_the_candidate_alias(
    home: Settings, lenient_policies: Path, trained: tuple[dict[str, Any], Settings]
) -> None:
    # given a registered version and no champion in staging
    summary, _ = trained
    # when it is promoted to staging
    code, outcome, err = _promote("--policies", str(lenient_policies), "--requested-by", "alice")
    # then the policy allows it, a branch with the release change exists, and the candidate alias moved
    assert code == 0, err
    assert outcome["allow"] is True
    assert any("first promotion" in warning for warning in outcome["warnings"])
    branch = "promote/scoregate-fraud-v1-staging"
    assert outcome["branch"] == branch and branch in _branches(home)
    assert _aliases(home, "scoregate-fraud") == {"staging-candidate": "1"}
    changed = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "diff", "--name-only", f"main..{branch}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert changed == ["gitops/overlays/staging/release.yaml"]
    release = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "show", f"{branch}:gitops/overlays/staging/release.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert summary["bento_tag"] in release and summary["bento_digest"] in release
    # and the decision is audited, stored for replay and explained in the report
    records = read_audit_records(home.home / "audit" / "audit.jsonl")
    assert [(r.action, r.decision, r.environment) for r in records][-1] == ("promotion.decision", "allow", "staging")
    assert (home.home / "decisions" / f"{outcome['bundle_hash']}.json").exists()
    report = Path(outcome["report_path"]).read_text(encoding="utf-8")
    assert "First promotion to this environment" in report and "gitops/overlays/staging/release.yaml" in report


def test_production_without_independent_approval_is_denied_and_nothing_moves(
    home: Settings, lenient_policies: Path
) -> None:
    # given version 1 (staged by the previous test, or not) and a request approved only by its requester
    branches_before = _branches(home)
    aliases_before = _aliases(home, "scoregate-fraud")
    # when production is requested
    code, outcome, _ = _promote(
        "--policies", str(lenient_policies), "--requested-by", "bob", "--approved-by", "bob", env="production"
    )
    # then it is denied with the four-eyes rule, and no branch or alias moved
    assert code == 4
    assert outcome["allow"] is False
    assert "production.four_eyes" in {v["rule"] for v in outcome["violations"]}
    assert _branches(home) == branches_before
    assert _aliases(home, "scoregate-fraud") == aliases_before
    assert "Nothing was committed" in Path(outcome["report_path"]).read_text(encoding="utf-8")


def test_unknown_version_is_a_usage_error(home: Settings) -> None:
    code, _, err = _promote(version="99")
    assert code == 2
    assert "no registered version '99'" in err


def test_policy_that_does_not_compile_denies_naming_the_file(home: Settings, tmp_path: Path) -> None:
    # given a policy folder whose Rego has a syntax error
    broken = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", broken)
    rego = broken / "promotion.rego"
    rego.write_text(rego.read_text(encoding="utf-8") + "\nthis is not rego {\n", encoding="utf-8")
    aliases_before = _aliases(home, "scoregate-fraud")
    # when a promotion asks it
    code, outcome, _ = _promote("--policies", str(broken))
    # then the answer is deny, the violation names the file, and nothing moved
    assert code == 4
    (violation,) = outcome["violations"]
    assert violation["rule"] == "policy.compile_error" and "promotion.rego" in violation["message"]
    assert _aliases(home, "scoregate-fraud") == aliases_before


def test_unreachable_opa_server_denies(home: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # given an OPA URL where nothing listens
    monkeypatch.setenv("SCOREGATE_OPA_URL", "http://127.0.0.1:9")
    # when a promotion asks it
    code, outcome, _ = _promote()
    # then it fails closed
    assert code == 4
    assert {v["rule"] for v in outcome["violations"]} == {"policy.unavailable"}


def test_rejected_push_moves_no_alias_and_is_audited(
    home: Settings, lenient_policies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a GitOps remote whose hook refuses every push
    remote = tmp_path / "refusing.git"
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", "--single-branch", str(home.home / "gitops.git"), str(remote)],
        check=True,
    )
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected by policy' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    monkeypatch.setenv("SCOREGATE_GITOPS_REMOTE", str(remote))
    aliases_before = _aliases(home, "scoregate-fraud")
    # when a promotion is allowed but its push is refused (tried, fetched and rebased, tried again)
    code, _, err = _promote("--policies", str(lenient_policies))
    # then a clear error, no alias moved, and the failure is in the audit trail
    assert code == 1
    assert "git push" in err and "protected by policy" in err
    assert _aliases(home, "scoregate-fraud") == aliases_before
    last = read_audit_records(home.home / "audit" / "audit.jsonl")[-1]
    assert last.action == "promotion.failed" and last.details["alias_moved"] == "no"


def test_second_promotion_waits_for_the_lock_then_fails_clearly(
    home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a promotion already holding the lock
    from tasks.locks import exclusive_lock

    monkeypatch.setenv("SCOREGATE_LOCK_TIMEOUT_SECONDS", "0.5")
    with exclusive_lock(home.home / "locks" / "promotion.lock", timeout_seconds=1, purpose="promotion"):
        # when another starts
        code, _, err = _promote()
    # then it gives up with a message that says why
    assert code == 1
    assert "another promotion is in progress" in err


def test_an_edited_audit_log_stops_promotion(home: Settings, tmp_path: Path) -> None:
    # given an audit log with one record edited by hand
    log = home.home / "audit" / "audit.jsonl"
    original = log.read_bytes()
    lines = original.decode().splitlines()
    lines[0] = lines[0].replace('"actor":"alice"', '"actor":"mallory"')
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        # when a promotion reads the trail
        code, _, err = _promote()
        # then it refuses, naming the broken log; and `audit verify` finds the edited record
        assert code == 1
        assert "audit log does not verify" in err
        assert not verify_audit_log(log).ok
        assert run_cli("audit", "verify")[0] == 4
    finally:
        log.write_bytes(original)


def test_production_promotion_opens_a_gitlab_merge_request_with_the_report(
    home: Settings, lenient_policies: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given GitLab configured (a stand-in of its REST API, reached by the real python-gitlab client) and its token
    # readable from the laptop environment
    from tests.gitlab_standin import gitlab_standin

    token = "glpat-test-token-0123456789"
    with gitlab_standin(token) as gitlab:
        monkeypatch.setenv("SCOREGATE_GITLAB_URL", gitlab.url)
        monkeypatch.setenv("SCOREGATE_GITLAB_PROJECT", "platform/scoregate-gitops")
        monkeypatch.setenv("SCOREGATE_ALLOW_ENV_SECRETS", "1")
        monkeypatch.setenv("SCOREGATE_SECRET_GITLAB_TOKEN", token)
        # when version 1 (staged earlier in this module) is promoted to production with another person's approval
        code, outcome, err = _promote(
            "--policies", str(lenient_policies), "--requested-by", "alice", "--approved-by", "carol", env="production"
        )
    # then the merge request is opened from the promotion branch, described by the promotion report
    assert code == 0, err
    assert outcome["merge_request"] == f"{gitlab.url}/platform/scoregate-gitops/-/merge_requests/1"
    (request,) = gitlab.merge_requests
    assert gitlab.projects == ["platform/scoregate-gitops"]
    assert request["source_branch"] == "promote/scoregate-fraud-v1-production"
    assert request["target_branch"] == "main"
    assert request["title"] == "Promote scoregate-fraud v1 to production"
    assert "## Policy verdict" in request["description"] and "every rule passed" in request["description"]
    # and the token appears in no output, report or audit record
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, err, Path(outcome["report_path"]).read_text(encoding="utf-8")]
    texts.append((home.home / "audit" / "audit.jsonl").read_text(encoding="utf-8"))
    assert not any(token in text for text in texts)
    # nor in any file of the home (the MLflow database and artifacts, reports, logs) nor the GitOps history
    stored = [path for path in home.home.rglob("*") if path.is_file()]
    assert home.home / "mlflow.db" in stored
    assert [path for path in stored if token.encode() in path.read_bytes()] == []
    history = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "log", "--all", "-p"], capture_output=True, text=True, check=True
    ).stdout
    assert "Promote scoregate-fraud v1 to production" in history
    assert token not in history


def test_gitlab_refusal_removes_the_branch_and_moves_no_alias(
    home: Settings, lenient_policies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given GitLab that refuses the token
    from tests.gitlab_standin import gitlab_standin

    with gitlab_standin("the-right-token") as gitlab:
        monkeypatch.setenv("SCOREGATE_GITLAB_URL", gitlab.url)
        monkeypatch.setenv("SCOREGATE_GITLAB_PROJECT", "platform/scoregate-gitops")
        monkeypatch.setenv("SCOREGATE_ALLOW_ENV_SECRETS", "1")
        monkeypatch.setenv("SCOREGATE_SECRET_GITLAB_TOKEN", "a-wrong-token")
        subprocess.run(
            ["git", "-C", str(home.home / "gitops.git"), "branch", "-D", "promote/scoregate-fraud-v1-staging"],
            check=True,
            capture_output=True,
        )
        branches_before = _branches(home)
        aliases_before = _aliases(home, "scoregate-fraud")
        # when a promotion is allowed, committed and pushed, but its merge request cannot be opened
        code, _, err = _promote("--policies", str(lenient_policies), "--requested-by", "dave")
    # then the error names GitLab, the pushed branch is gone again, no alias moved, and the audit says so
    assert code == 1 and "GitLab" in err and "401" in err
    assert _branches(home) == branches_before
    assert _aliases(home, "scoregate-fraud") == aliases_before
    last = read_audit_records(home.home / "audit" / "audit.jsonl")[-1]
    assert (last.action, last.details["alias_moved"], last.details["branch_removed"]) == (
        "promotion.failed",
        "no",
        "True",
    )
