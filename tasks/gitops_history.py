"""What each environment ran when, read from the GitOps repository's history (Git is the control plane).

Every change of `gitops/overlays/<env>/release.yaml` on the default branch is one entry: a promotion that was
merged, or a rollback. `release_at` answers "which version was live at time T"; `last_promotion` finds the commit
a rollback reverts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from tasks.gitops_manifests import Release, release_path
from tasks.gitops_repo import git

__all__ = ["BOOTSTRAP_DIGEST", "ReleaseChange", "last_promotion", "release_at", "release_history"]

BOOTSTRAP_DIGEST = "sha256:" + "0" * 64
_FIELDS = {
    "modelName": "model_name",
    "modelVersion": "model_version",
    "bentoTag": "bento_tag",
    "imageTag": "image_tag",
    "bentoDigest": "bento_digest",
}


@dataclass(frozen=True)
class ReleaseChange:
    commit: str
    at: datetime
    subject: str
    release: Release | None  # None for the bootstrap placeholder or a file that is not a valid release

    @property
    def is_rollback(self) -> bool:
        return self.subject.startswith("Revert ")


def _release_at_commit(repo: Path, commit: str, env: str) -> Release | None:
    relative = release_path(Path("."), env).as_posix().removeprefix("./")
    text = git(["show", f"{commit}:{relative}"], cwd=repo)
    data = (yaml.safe_load(text) or {}).get("data", {})
    values = {field: str(data.get(key, "")) for key, field in _FIELDS.items()}
    try:
        release = Release.model_validate(values)
    except ValueError:
        return None
    # The overlays ship a placeholder release (all-zero digest) until the first promotion: no version to return to.
    return None if release.bento_digest == BOOTSTRAP_DIGEST else release


def release_history(repo: Path, env: str, branch: str = "HEAD") -> list[ReleaseChange]:
    """Changes of the environment's release on `branch`, oldest first."""
    relative = release_path(Path("."), env).as_posix().removeprefix("./")
    log = git(["log", "--format=%H%x00%cI%x00%s", "--reverse", branch, "--", relative], cwd=repo)
    changes: list[ReleaseChange] = []
    for line in log.splitlines():
        commit, at, subject = line.split("\x00", 2)
        changes.append(
            ReleaseChange(
                commit=commit,
                at=datetime.fromisoformat(at),
                subject=subject,
                release=_release_at_commit(repo, commit, env),
            )
        )
    return changes


def release_at(changes: list[ReleaseChange], moment: datetime) -> ReleaseChange | None:
    """The change in force at `moment` (the last one committed at or before it)."""
    live = [change for change in changes if change.at <= moment]
    return live[-1] if live else None


def last_promotion(changes: list[ReleaseChange]) -> tuple[ReleaseChange, ReleaseChange] | None:
    """The newest promotion still in force and the change before it, or None when there is nothing to revert.

    A rollback's revert commit cancels the promotion it names, so reverted promotions are skipped.
    """
    reverted = {change.subject.removeprefix('Revert "').removesuffix('"') for change in changes if change.is_rollback}
    promotions = [
        (index, change)
        for index, change in enumerate(changes)
        if change.subject.startswith("Promote ") and change.subject not in reverted
    ]
    if not promotions:
        return None
    index, promotion = promotions[-1]
    return (promotion, changes[index - 1]) if index > 0 else None
