"""Rollback, finalize and history: the on-call side of the GitOps loop.

Rollback goes through Git first: Argo CD's auto-sync would undo anything done behind Git's back. It reverts only the
promotion commit with a new commit (on a branch for a merge request where the environment requires review,
directly on the default branch otherwise), moves the MLflow champion alias back and writes an audit record. When a
part fails, the error says exactly what was and was not done.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict

from flows.progress import stage
from flows.promotion import gitops_remote
from tasks.audit import append_audit_record
from tasks.gitops_history import last_promotion, release_at, release_history
from tasks.gitops_repo import DEFAULT_BRANCH, GitError, git, working_copy
from tasks.locks import exclusive_lock
from tasks.registry import delete_alias, set_alias, version_for_alias
from tasks.settings import Settings

__all__ = [
    "LiveVersionChanged",
    "NothingToRollBack",
    "PartialRollback",
    "RollbackOutcome",
    "finalize_promotion",
    "history",
    "rollback_flow",
]

# Environments whose changes go through a reviewed merge request rather than straight to the default branch.
REVIEWED_ENVIRONMENTS = {"production"}


class NothingToRollBack(ValueError):
    """No promotion is in force, or the one in force has no earlier version to go back to."""


class LiveVersionChanged(RuntimeError):
    """The release in force is not the version the caller meant to roll back (someone moved it in between)."""


class PartialRollback(RuntimeError):
    """Some steps of a rollback were done and a later one failed; the message lists both."""


class RollbackOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str
    reverted_commit: str
    revert_commit: str
    branch: str
    from_version: str
    to_version: str
    alias_moved: bool


def _timeout() -> float:
    return float(os.environ.get("SCOREGATE_LOCK_TIMEOUT_SECONDS", "60"))


@flow(name="scoregate-rollback", validate_parameters=True)
def rollback_flow(
    environment: str, reason: str, actor: str | None = None, expected_version: str | None = None
) -> dict[str, Any]:
    """Revert the promotion in force. With `expected_version`, only if that version is the one in force: a caller
    that decided on evidence about one version (the drift watch) never reverts another that landed meanwhile."""
    settings = Settings.from_env()
    settings.ensure_dirs()
    actor = actor or getpass.getuser()
    with exclusive_lock(settings.home / "locks" / "promotion.lock", timeout_seconds=_timeout(), purpose="promotion"):
        return _rollback(settings, environment, reason, actor, expected_version).model_dump(mode="json")


def _rollback(
    settings: Settings, environment: str, reason: str, actor: str, expected_version: str | None = None
) -> RollbackOutcome:
    remote = gitops_remote(settings)
    done: list[str] = []
    with working_copy(remote, settings.home / "work") as repo:
        stage("Finding the promotion to revert")
        changes = release_history(repo, environment, f"origin/{DEFAULT_BRANCH}")
        found = last_promotion(changes)
        if found is None or found[1].release is None:
            raise NothingToRollBack(f"{environment}: no promotion with an earlier version to roll back to")
        promotion, previous = found
        assert promotion.release is not None and previous.release is not None
        if expected_version is not None and promotion.release.model_version != expected_version:
            raise LiveVersionChanged(
                f"{environment} runs v{promotion.release.model_version} now, not v{expected_version} as measured; "
                "nothing was reverted and no alias moved"
            )
        branch = DEFAULT_BRANCH
        if environment in REVIEWED_ENVIRONMENTS:
            branch = f"rollback/{environment}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
            git(["checkout", "--quiet", "-b", branch, f"origin/{DEFAULT_BRANCH}"], cwd=repo)
        stage("Reverting the promotion commit")
        try:
            git(["revert", "--no-edit", promotion.commit], cwd=repo)
        except GitError as error:
            git(["revert", "--abort"], cwd=repo)
            raise GitError(
                f"reverting {promotion.commit[:12]} ({promotion.subject}) conflicts with later changes; "
                f"nothing was pushed and no alias moved: {error}"
            ) from error
        revert_commit = git(["rev-parse", "HEAD"], cwd=repo).strip()
        git(["push", "--quiet", "origin", f"HEAD:{branch}"], cwd=repo)
        done.append(f"pushed revert {revert_commit[:12]} of {promotion.commit[:12]} to {branch}")
    from_version, to_version = promotion.release.model_version, previous.release.model_version
    model = promotion.release.model_name
    stage("Moving the champion alias back")
    try:
        set_alias(settings, model, environment, to_version)
        done.append(f"moved alias {environment} of {model} to v{to_version}")
        append_audit_record(
            settings.home / "audit" / "audit.jsonl",
            actor=actor,
            action="rollback",
            environment=environment,
            model_name=model,
            model_version=to_version,
            details={
                "reason": reason,
                "from_version": from_version,
                "reverted_commit": promotion.commit,
                "revert_commit": revert_commit,
                "branch": branch,
            },
        )
    except BaseException as error:
        raise PartialRollback(f"done: {'; '.join(done)}. NOT done after that: {error}") from error
    return RollbackOutcome(
        environment=environment,
        reverted_commit=promotion.commit,
        revert_commit=revert_commit,
        branch=branch,
        from_version=from_version,
        to_version=to_version,
        alias_moved=True,
    )


def finalize_promotion(settings: Settings, model_name: str, environment: str, actor: str) -> str:
    """After a passed canary: the champion alias `<env>` takes the version that `<env>-candidate` names."""
    candidate = version_for_alias(settings, model_name, f"{environment}-candidate")
    if candidate is None:
        raise NothingToRollBack(f"{model_name}: no {environment}-candidate alias to finalize")
    with working_copy(gitops_remote(settings), settings.home / "work") as repo:
        changes = release_history(repo, environment, f"origin/{DEFAULT_BRANCH}")
    live = changes[-1].release if changes else None
    if live is None or live.model_version != candidate.version:
        raise GitError(
            f"{environment} on {DEFAULT_BRANCH} runs v{live.model_version if live else '?'}, not the candidate "
            f"v{candidate.version}: merge the promotion's merge request (and let the canary pass) first"
        )
    set_alias(settings, model_name, environment, candidate.version)
    delete_alias(settings, model_name, f"{environment}-candidate")
    append_audit_record(
        settings.home / "audit" / "audit.jsonl",
        actor=actor,
        action="promotion.finalize",
        environment=environment,
        model_name=model_name,
        model_version=candidate.version,
        details={"alias": environment},
    )
    return candidate.version


def history(settings: Settings, environment: str, at: datetime | None = None) -> list[dict[str, str]]:
    """Which version was live when, from the default branch of the GitOps repository."""
    with working_copy(gitops_remote(settings), settings.home / "work") as repo:
        changes = release_history(repo, environment, f"origin/{DEFAULT_BRANCH}")
    if at is not None:
        change = release_at(changes, at)
        changes = [change] if change is not None else []
    return [
        {
            "since": change.at.isoformat(),
            "model_version": change.release.model_version if change.release else "(bootstrap)",
            "bento_tag": change.release.bento_tag if change.release else "",
            "commit": change.commit,
            "change": change.subject,
        }
        for change in changes
    ]
