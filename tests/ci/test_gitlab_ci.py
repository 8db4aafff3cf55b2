""".gitlab-ci.yml: linted against GitLab's schema, and run with gitlab-ci-local (shell executor, no Docker) in a
scratch Git repository with a default branch and merge-request branches, to show which jobs each pipeline runs
and to run the cheap jobs for real."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CI_FILE = PROJECT_ROOT / ".gitlab-ci.yml"
NODE_DIR = Path(__file__).resolve().parent / "node"
GITLAB_CI_LOCAL = NODE_DIR / "node_modules" / ".bin" / "gitlab-ci-local"
NPM_INSTALL = "npm ci --prefix tests/ci/node"
VENV = Path(sys.executable).parent.parent

# Files the scratch repository holds: the CI file, the lint configuration and a few sources for the lint job to
# check, and the policies a merge request may touch.
COPIED = (".gitlab-ci.yml", "pyproject.toml", "tasks/__init__.py", "tasks/secrets.py", "tests/servers.py")
# Jobs that run in every merge request and on every push to the default branch.
EVERY_CHANGE = {"ruff", "mypy", "pytest", "policy-test", "gitops-validate"}

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class ScratchRepo:
    """One clone per branch (as git worktrees) of a repository whose `origin` is a local bare repository."""

    root: Path

    def branch(self, name: str) -> Path:
        return self.root / "worktrees" / name


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "ci-test",
        "GIT_AUTHOR_EMAIL": "ci-test@example.invalid",
        "GIT_COMMITTER_NAME": "ci-test",
        "GIT_COMMITTER_EMAIL": "ci-test@example.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    completed = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, f"git {' '.join(args)} failed: {completed.stderr}"
    return completed.stdout


def _commit_on_branch(repo: ScratchRepo, branch: str, path: str, text: str) -> None:
    """A worktree on a new branch from main with one commit that writes `text` to `path`."""
    worktree = repo.branch(branch)
    _git(repo.branch("main"), "worktree", "add", "-q", "-b", branch, str(worktree), "main")
    target = worktree / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    _git(worktree, "add", "-A")
    _git(worktree, "commit", "-q", "-m", f"change {path}")


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory: pytest.TempPathFactory) -> ScratchRepo:
    """main (pushed to origin) plus merge-request branches touching policies, model code, docs or bad code."""
    assert shutil.which("node") is not None, "node (20+) is not on PATH: gitlab-ci-local needs it"
    assert GITLAB_CI_LOCAL.exists(), f"gitlab-ci-local is not installed: run `{NPM_INSTALL}`"
    assert shutil.which("rsync") is not None, "rsync is not installed (apt-get install rsync): gitlab-ci-local uses it"
    repo = ScratchRepo(tmp_path_factory.mktemp("gitlab-ci"))
    main = repo.branch("main")
    _git(repo.root, "init", "-q", "--bare", "-b", "main", "origin.git")
    _git(repo.root, "init", "-q", "-b", "main", str(main))
    for name in COPIED:
        (main / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, main / name)
    shutil.copytree(PROJECT_ROOT / "policies", main / "policies")
    # The real set-up installs the locked environment (tested by .ci/run itself); here the job links this one.
    (main / ".ci").mkdir()
    (main / ".ci" / "setup").write_text(f'#!/usr/bin/env bash\nln -sfn "{VENV}" .venv\n', encoding="utf-8")
    (main / ".gitignore").write_text(".venv\n.scoregate/\n", encoding="utf-8")
    _git(main, "add", "-A")
    _git(main, "commit", "-q", "-m", "main")
    _git(main, "remote", "add", "origin", str(repo.root / "origin.git"))
    _git(main, "push", "-q", "origin", "main")
    _git(main, "remote", "set-head", "origin", "main")
    _commit_on_branch(repo, "mr-policy", "policies/README.rego", "package scoregate.readme\n")
    _commit_on_branch(repo, "mr-model", "tasks/threshold_note.py", '"""A change to model code."""\n')
    _commit_on_branch(repo, "mr-docs", "docs/notes.txt", "a change that is neither policy nor model code\n")
    _commit_on_branch(repo, "mr-unformatted", "tasks/messy.py", "x = {  'a':1 }\n")
    return repo


def _gitlab_ci_local(cwd: Path, *args: str, source: str | None = None) -> subprocess.CompletedProcess[str]:
    variables = ["--variable", f"CI_PIPELINE_SOURCE={source}"] if source else []
    return subprocess.run(
        [str(GITLAB_CI_LOCAL), "--ignore-predefined-vars", "CI_PIPELINE_SOURCE", *variables, *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", "HOME": str(cwd.parent.parent)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _pipeline(cwd: Path, source: str | None) -> dict[str, dict[str, str]]:
    """The jobs gitlab-ci-local would run (when:never left out), by name, from its CSV listing."""
    listing = _gitlab_ci_local(cwd, "--list-csv", source=source)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    header = listing.stdout.index("name;stage;when")
    rows = csv.DictReader(io.StringIO(listing.stdout[header:]), delimiter=";")
    return {row["name"]: row for row in rows}


def test_the_file_matches_gitlabs_schema() -> None:
    # given the committed file and check-jsonschema's vendored GitLab CI schema (no network needed)
    command = [str(VENV / "bin" / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(CI_FILE)]
    # when it is checked
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    # then it validates
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "ok -- validation done" in completed.stdout


def test_the_schema_check_catches_an_invalid_job(tmp_path: Path) -> None:
    # given the file with a job whose `when` GitLab does not know
    broken = tmp_path / ".gitlab-ci.yml"
    broken.write_text(CI_FILE.read_text(encoding="utf-8") + "\nbroken:\n  script: [true]\n  when: sometimes\n")
    command = [str(VENV / "bin" / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(broken)]
    # when it is checked
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    # then the check fails
    assert completed.returncode == 1
    assert "sometimes" in completed.stdout


@pytest.mark.parametrize(
    ("branch", "source", "expected"),
    [
        pytest.param("main", "push", EVERY_CHANGE | {"promote-staging"}, id="default-branch"),
        pytest.param("main", "schedule", {"pytest", "train-sample"}, id="schedule"),
        pytest.param("main", "web", {"promote-staging"}, id="run-by-hand"),
        pytest.param("mr-policy", "merge_request_event", EVERY_CHANGE | {"policy-replay"}, id="mr-policies"),
        pytest.param("mr-model", "merge_request_event", EVERY_CHANGE | {"train-sample"}, id="mr-model-code"),
        pytest.param("mr-docs", "merge_request_event", EVERY_CHANGE, id="mr-other"),
        pytest.param("mr-docs", "push", set(), id="branch-push-without-mr"),
    ],
)
def test_each_pipeline_runs_its_jobs(scratch_repo: ScratchRepo, branch: str, source: str, expected: set[str]) -> None:
    # given a branch and what started the pipeline
    # when gitlab-ci-local evaluates the workflow and job rules
    jobs = _pipeline(scratch_repo.branch(branch), source)
    # then exactly the expected jobs run
    assert set(jobs) == expected


def test_the_promotion_is_manual_and_never_blocks_the_pipeline(scratch_repo: ScratchRepo) -> None:
    # given a default-branch pipeline
    # when its promotion job is listed, and run by hand without MODEL_VERSION
    promote = _pipeline(scratch_repo.branch("main"), "push")["promote-staging"]
    run = _gitlab_ci_local(scratch_repo.branch("main"), "--force-shell-executor", "promote-staging", source="push")
    # then it waits for a person, in the staging environment, and refuses to guess a version
    assert (promote["when"], promote["allowFailure"], promote["environment"]) == ("manual", "true", "staging")
    assert "set MODEL_VERSION to the registered model version to promote" in run.stdout
    assert "WARN  promote-staging" in run.stdout


def test_the_lint_job_runs_in_a_merge_request_pipeline(scratch_repo: ScratchRepo) -> None:
    # given a merge request that changes model code
    worktree = scratch_repo.branch("mr-model")
    # when its ruff job runs in a shell
    run = _gitlab_ci_local(worktree, "--force-shell-executor", "ruff", source="merge_request_event")
    # then the lint passes on the branch's files
    assert run.returncode == 0, run.stdout + run.stderr
    assert "All checks passed!" in run.stdout
    assert "PASS  ruff" in run.stdout


def test_the_lint_job_fails_on_unformatted_code(scratch_repo: ScratchRepo) -> None:
    # given a merge request with a badly formatted file
    worktree = scratch_repo.branch("mr-unformatted")
    # when its ruff job runs
    run = _gitlab_ci_local(worktree, "--force-shell-executor", "ruff", source="merge_request_event")
    # then the job fails and names the file
    assert run.returncode != 0
    assert "FAIL  ruff" in run.stdout
    assert "tasks/messy.py" in run.stdout


def test_the_policy_replay_keeps_its_report(scratch_repo: ScratchRepo) -> None:
    # given a merge request that changes a policy
    worktree = scratch_repo.branch("mr-policy")
    # when its policy-replay job runs
    run = _gitlab_ci_local(worktree, "--force-shell-executor", "policy-replay", source="merge_request_event")
    # then it passes and its Markdown report is kept as the job's artifact
    assert run.returncode == 0, run.stdout + run.stderr
    report = worktree / ".gitlab-ci-local" / "artifacts" / "policy-replay" / "policy-replay.md"
    assert report.is_file()
    assert report.read_text(encoding="utf-8").startswith("## Policy replay")
