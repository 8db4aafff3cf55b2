"""Helpers shared by the policy tests: the shipped policy folder, its example bundles, editable copies."""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.decision import DecisionBundle

__all__ = ["POLICY_DIR", "copy_policies", "example_bundle", "example_paths"]

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"


def example_paths() -> list[Path]:
    """The committed example bundles, sorted."""
    return sorted((POLICY_DIR / "examples").glob("*.json"))


def example_bundle(stem: str) -> DecisionBundle:
    """One committed example bundle by file stem, e.g. "allow_production_with_champion"."""
    path = POLICY_DIR / "examples" / f"{stem}.json"
    return DecisionBundle.model_validate_json(path.read_text(encoding="utf-8"))


def copy_policies(target: Path) -> Path:
    """A writable copy of the shipped policy folder, for tests that break or change it."""
    shutil.copytree(POLICY_DIR, target)
    return target
