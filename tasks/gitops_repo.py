"""The Git adapter for the GitOps repository: the only module that clones, commits and pushes it.

Git is the control plane (Argo CD applies whatever the repository says), so a promotion is a commit on a branch
and a rollback is a revert commit. The embedded default remote is a bare repository under SCOREGATE_HOME, seeded
from this project's `gitops/` folder; `SCOREGATE_GITOPS_REMOTE` points at any other git URL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.lineage import PROJECT_ROOT

__all__ = [
    "DEFAULT_BRANCH",
    "CommitResult",
    "GitError",
    "PushRejected",
    "commit_on_branch",
    "delete_remote_branch",
    "ensure_local_remote",
    "git",
    "working_copy",
]

DEFAULT_BRANCH = "main"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "scoregate",
    "GIT_AUTHOR_EMAIL": "scoregate@localhost",
    "GIT_COMMITTER_NAME": "scoregate",
    "GIT_COMMITTER_EMAIL": "scoregate@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


class GitError(RuntimeError):
    """A git command failed; the message has the command and git's own words."""


class PushRejected(GitError):
    """The remote refused the push (someone else moved the branch, or a hook said no)."""


def git(args: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> str:
    command = ["git", *args]
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **_IDENTITY, **(env or {})},
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        message = f"git {' '.join(args)} failed: {' | '.join(detail[-4:])}"
        if args and args[0] == "push" and ("rejected" in result.stderr or "remote rejected" in result.stderr):
            raise PushRejected(message)
        raise GitError(message)
    return result.stdout


def ensure_local_remote(bare: Path, seed_from: Path = PROJECT_ROOT / "gitops") -> str:
    """Create the bare repository standing for the GitOps remote, seeded with `gitops/`, once; returns its URL."""
    if (bare / "HEAD").exists():
        return str(bare)
    bare.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="gitops-seed-", dir=bare.parent))
    try:
        git(
            ["init", "--quiet", "--bare", f"--initial-branch={DEFAULT_BRANCH}", str(staging / "remote.git")],
            cwd=staging,
        )
        work = staging / "work"
        git(["init", "--quiet", f"--initial-branch={DEFAULT_BRANCH}", str(work)], cwd=staging)
        shutil.copytree(seed_from, work / "gitops")
        git(["add", "-A"], cwd=work)
        git(["commit", "--quiet", "-m", "Seed the GitOps repository from scoregate's gitops/"], cwd=work)
        git(["push", "--quiet", str(staging / "remote.git"), DEFAULT_BRANCH], cwd=work)
        # Publish the finished repository in one rename, so a half-seeded remote is never seen.
        (staging / "remote.git").rename(bare)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(bare)


@contextmanager
def working_copy(remote: str, parent: Path) -> Iterator[Path]:
    """A fresh clone of the remote in a temporary folder, removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gitops-work-", dir=parent))
    try:
        git(["clone", "--quiet", remote, str(folder / "repo")], cwd=folder)
        yield folder / "repo"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class CommitResult:
    branch: str
    commit: str
    diff: str
    retried: bool
    created_branch: bool  # False when the branch already existed on the remote (then it is not ours to delete)


def commit_on_branch(
    remote: str,
    parent: Path,
    *,
    branch: str,
    base: str,
    message: str,
    change: Callable[[Path], list[Path]],
) -> CommitResult:
    """Apply `change` to a clone of `base`, commit it on `branch` and push; on rejection fetch, rebase, retry once.

    `change` edits files under the clone's root and returns the changed paths. Nothing is pushed when it changes
    nothing; a push refused twice raises, and the remote is as it was.
    """
    with working_copy(remote, parent) as repo:
        existed = bool(git(["branch", "-r", "--list", f"origin/{branch}"], cwd=repo).strip())
        git(["checkout", "--quiet", "-B", branch, f"origin/{base}"], cwd=repo)
        changed = change(repo)
        if not changed:
            raise GitError(f"nothing to commit on {branch}: the repository already says this")
        git(["add", "--", *[str(path.relative_to(repo)) for path in changed]], cwd=repo)
        git(["commit", "--quiet", "-m", message], cwd=repo)
        retried = False
        try:
            git(["push", "--quiet", "origin", f"{branch}:{branch}"], cwd=repo)
        except PushRejected:
            retried = True
            git(["fetch", "--quiet", "origin"], cwd=repo)
            remote_branches = git(["branch", "-r", "--list", f"origin/{branch}"], cwd=repo).strip()
            onto = f"origin/{branch}" if remote_branches else f"origin/{base}"
            try:
                git(["rebase", "--quiet", onto], cwd=repo)
            except GitError:
                git(["rebase", "--abort"], cwd=repo)
                raise
            git(["push", "--quiet", "origin", f"{branch}:{branch}"], cwd=repo)
        commit = git(["rev-parse", "HEAD"], cwd=repo).strip()
        diff = git(["show", "--format=", "--stat", "--patch", commit], cwd=repo)
    return CommitResult(branch=branch, commit=commit, diff=diff, retried=retried, created_branch=not existed)


def delete_remote_branch(remote: str, parent: Path, branch: str) -> None:
    """Undo a pushed branch whose later steps failed, so a failed promotion leaves no branch behind."""
    with working_copy(remote, parent) as repo:
        git(["push", "--quiet", "origin", "--delete", branch], cwd=repo)
