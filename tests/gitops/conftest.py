"""Fixtures for the GitOps manifest tests: the renders of the committed overlays, and a scratch copy of gitops/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.gitops_manifests import render_all, render_argocd
from tests.gitops.helpers import REPO_ROOT, Manifest, load_documents


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """Each environment's overlay as kustomize renders it now (rendered once per session: ~0.2 s a render)."""
    return render_all(REPO_ROOT)


@pytest.fixture(scope="session")
def rendered_documents(rendered: dict[str, str]) -> dict[str, list[Manifest]]:
    """The rendered objects of each environment."""
    return {env: load_documents(text) for env, text in rendered.items()}


@pytest.fixture(scope="session")
def argocd_documents() -> list[Manifest]:
    """The AppProject and Applications of gitops/argocd."""
    return load_documents(render_argocd(REPO_ROOT))


@pytest.fixture
def gitops_copy(tmp_path: Path) -> Path:
    """A repository root in tmp_path holding a copy of gitops/, for tests that edit it."""
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "gitops", root / "gitops")
    return root
