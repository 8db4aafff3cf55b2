"""Lineage: what code, which locked dependencies and which data produced a model.

The promotion policy refuses a model whose lineage is incomplete, so these values are recorded as tags on the
MLflow run and on the registered version.
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["PROJECT_ROOT", "Lineage", "collect_lineage", "git_commit", "lock_file_hash", "package_versions"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_TRACKED_PACKAGES = (
    "scoregate",
    "numpy",
    "polars",
    "pandera",
    "scikit-learn",
    "mlflow",
    "bentoml",
    "prefect",
    "pydantic",
)


class Lineage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_hash: str
    feature_spec_hash: str
    git_commit: str
    lock_hash: str
    package_versions: dict[str, str]

    def tags(self) -> dict[str, str]:
        tags = {
            "scoregate.data_hash": self.data_hash,
            "scoregate.feature_spec_hash": self.feature_spec_hash,
            "scoregate.git_commit": self.git_commit,
            "scoregate.lock_hash": self.lock_hash,
        }
        tags.update({f"scoregate.version.{name}": version for name, version in self.package_versions.items()})
        return tags


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The commit of the code, with '+dirty' when the tree has changes; 'unknown' outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def lock_file_hash(root: Path = PROJECT_ROOT) -> str:
    lock = root / "uv.lock"
    if not lock.is_file():
        return "unknown"
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


def collect_lineage(data_hash: str, feature_spec_hash: str) -> Lineage:
    return Lineage(
        data_hash=data_hash,
        feature_spec_hash=feature_spec_hash,
        git_commit=git_commit(),
        lock_hash=lock_file_hash(),
        package_versions=package_versions(),
    )
