"""Rollback, finalize and history on a real bare Git repository and a real MLflow registry (SQLite)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tasks.audit import read_audit_records
from tasks.gitops_manifests import Release, read_release, write_release
from tasks.gitops_repo import commit_on_branch, git, working_copy
from tasks.settings import Settings
from tests.flows.conftest import home_at, run_cli

MODEL = "scoregate-fraud"


def _release(version: str) -> Release:
    return Release(
        model_name=MODEL,
        model_version=version,
        bento_tag=f"{MODEL}:v{version}-abc",
        image_tag=f"v{version}-abc",
        bento_digest="sha256:" + version * 64 if len(version) == 1 else "sha256:" + "0" * 64,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A home whose registry holds versions 1-3 of the model (registered directly, no training needed)."""
    with home_at(tmp_path_factory.mktemp("rollback-home")) as settings:
        settings.ensure_dirs()
        from tasks.registry import mlflow_client

        client = mlflow_client(settings)
        client.create_registered_model(MODEL)
        source = settings.home / "model-source"
        source.mkdir()
        for _ in range(3):
            client.create_model_version(MODEL, str(source))
        yield settings


def _remote(settings: Settings) -> str:
    from flows.promotion import gitops_remote

    return gitops_remote(settings)


def _merge_to_main(settings: Settings, branch: str) -> None:
    """What the approver's merge of the merge request does."""
    with working_copy(_remote(settings), settings.home / "work") as repo:
        git(["merge", "--quiet", "--no-ff", "-m", f"Merge branch '{branch}'", f"origin/{branch}"], cwd=repo)
        git(["push", "--quiet", "origin", "main"], cwd=repo)


def _promote_and_merge(settings: Settings, version: str, env: str) -> str:
    branch = f"promote/{MODEL}-v{version}-{env}"
    result = commit_on_branch(
        _remote(settings),
        settings.home / "work",
        branch=branch,
        base="main",
        message=f"Promote {MODEL} v{version} to {env}",
        change=lambda repo: write_release(repo, env, _release(version)),
    )
    _merge_to_main(settings, branch)
    return result.commit


def _live_version(settings: Settings, env: str, ref: str = "origin/main") -> str:
    with working_copy(_remote(settings), settings.home / "work") as repo:
        git(["checkout", "--quiet", ref], cwd=repo)
        return read_release(repo, env).model_version


def _alias(settings: Settings, name: str) -> str | None:
    from tasks.registry import version_for_alias

    found = version_for_alias(settings, MODEL, name)
    return found.version if found else None


def test_rollback_with_no_promotion_is_refused(home: Settings) -> None:
    code, _, err = run_cli("rollback", "--env", "production", "--reason", "INC-1")
    assert code == 2
    assert "no promotion with an earlier version to roll back to" in err


def test_rollback_of_the_first_promotion_has_no_earlier_version(home: Settings) -> None:
    # given only one promotion on top of the bootstrap release
    _promote_and_merge(home, "1", "production")
    # when / then
    code, _, err = run_cli("rollback", "--env", "production", "--reason", "INC-2")
    assert code == 2 and "no promotion with an earlier version" in err


def test_finalize_needs_the_promotion_merged_then_moves_the_champion(home: Settings) -> None:
    # given v2 promoted on a branch with its candidate alias, not yet merged
    from tasks.registry import set_alias

    set_alias(home, MODEL, "production", "1")
    commit_on_branch(
        _remote(home),
        home.home / "work",
        branch=f"promote/{MODEL}-v2-production",
        base="main",
        message=f"Promote {MODEL} v2 to production",
        change=lambda repo: write_release(repo, "production", _release("2")),
    )
    set_alias(home, MODEL, "production-candidate", "2")
    # when finalized before the merge, it refuses
    code, _, err = run_cli("promote", "--finalize", "--env", "production")
    assert code == 1 and "merge the promotion's merge request" in err
    assert _alias(home, "production") == "1"
    # when merged and finalized
    _merge_to_main(home, f"promote/{MODEL}-v2-production")
    code, _, err = run_cli("promote", "--finalize", "--env", "production")
    # then the champion alias moved, the candidate alias is gone, and it is audited
    assert code == 0, err
    assert _alias(home, "production") == "2" and _alias(home, "production-candidate") is None
    assert read_audit_records(home.home / "audit" / "audit.jsonl")[-1].action == "promotion.finalize"


def test_production_rollback_reverts_on_a_review_branch_and_moves_the_alias_back(home: Settings) -> None:
    # given v2 live in production after v1
    assert _live_version(home, "production") == "2"
    time.sleep(1.1)  # git records commit times to the second: keep `before` clear of both neighbours
    before = datetime.now(UTC)
    time.sleep(1.1)
    # when on-call rolls back
    code, out, err = run_cli("rollback", "--env", "production", "--reason", "INC-123", "--actor", "oncall")
    # then a revert commit waits on a rollback branch, the alias points at v1 again, and the audit says why
    assert code == 0, err
    assert "from v2 to v1" in out
    branch = out.split(" on ")[1].split(";")[0]
    assert branch.startswith("rollback/production-")
    assert _live_version(home, "production", f"origin/{branch}") == "1"
    assert _live_version(home, "production") == "2"  # main changes only when the merge request is merged
    assert _alias(home, "production") == "1"
    record = read_audit_records(home.home / "audit" / "audit.jsonl")[-1]
    assert (record.action, record.actor, record.model_version) == ("rollback", "oncall", "1")
    assert record.details["reason"] == "INC-123" and record.details["from_version"] == "2"
    # and once merged, history shows v2 then v1, and --at answers for a moment in between
    _merge_to_main(home, branch)
    code, out, _ = run_cli("history", "--env", "production")
    versions = [line.split()[1] for line in out.splitlines()]
    assert versions == ["v(bootstrap)", "v1", "v2", "v1"]
    code, out, _ = run_cli("history", "--env", "production", "--at", before.isoformat())
    assert [line.split()[1] for line in out.splitlines()] == ["v2"]


def test_rollback_that_conflicts_with_later_commits_pushes_nothing(home: Settings) -> None:
    # given staging with v1 then v3, and a later hand edit of the same release lines
    _promote_and_merge(home, "1", "staging")
    _promote_and_merge(home, "3", "staging")
    with working_copy(_remote(home), home.home / "work") as repo:
        path = repo / "gitops" / "overlays" / "staging" / "release.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace("v3-abc", "v3-hotfix"), encoding="utf-8")
        git(["commit", "--quiet", "-am", "Hand-edit the staging image"], cwd=repo)
        git(["push", "--quiet", "origin", "main"], cwd=repo)
    heads_before = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "show-ref"], capture_output=True, text=True, check=True
    ).stdout
    # when rolling back the v3 promotion
    code, _, err = run_cli("rollback", "--env", "staging", "--reason", "INC-9")
    # then: a clear error, and the remote is untouched
    assert code == 1 and "conflicts with later changes; nothing was pushed and no alias moved" in err
    heads_after = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "show-ref"], capture_output=True, text=True, check=True
    ).stdout
    assert heads_after == heads_before


def test_staging_rollback_goes_straight_to_main_and_names_what_was_not_done(home: Settings) -> None:
    # given staging at v3 promoted after v8, a version the registry does not hold
    with working_copy(_remote(home), home.home / "work") as repo:
        git(["revert", "--no-edit", "HEAD"], cwd=repo)  # drop the hand edit of the previous test
        git(["push", "--quiet", "origin", "main"], cwd=repo)
    _promote_and_merge(home, "8", "staging")
    _promote_and_merge(home, "3", "staging")
    # when rolled back: the Git part can be done, the alias part cannot
    code, _, err = run_cli("rollback", "--env", "staging", "--reason", "INC-10")
    # then the revert is on main directly (staging needs no review), and the message says what was and was not done
    assert code == 1
    assert "done: pushed revert" in err and "to main" in err and "NOT done after that" in err
    assert _live_version(home, "staging") == "8"
    assert _alias(home, "staging") is None


def test_a_rollback_for_a_version_no_longer_live_reverts_nothing(home: Settings) -> None:
    # given staging at v1, promoted after v2, and a caller that measured v2 (the drift watch, before someone moved on)
    from flows.rollback import LiveVersionChanged, rollback_flow

    _promote_and_merge(home, "2", "staging")
    _promote_and_merge(home, "1", "staging")
    heads_before = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "show-ref"], capture_output=True, text=True, check=True
    ).stdout
    # when it asks for a rollback of v2
    with pytest.raises(LiveVersionChanged, match="runs v1 now, not v2"):
        rollback_flow(environment="staging", reason="drift watch", actor="drift", expected_version="2")
    # then nothing was pushed and staging still runs v1
    heads_after = subprocess.run(
        ["git", "-C", str(home.home / "gitops.git"), "show-ref"], capture_output=True, text=True, check=True
    ).stdout
    assert heads_after == heads_before and _live_version(home, "staging") == "1"
    # and asked about the version that is live, it rolls back as usual
    outcome = rollback_flow(environment="staging", reason="drift watch", actor="drift", expected_version="1")
    assert (outcome["from_version"], outcome["to_version"]) == ("1", "2")
    assert _live_version(home, "staging") == "2"
