"""Shared helpers for the GitOps manifest tests: splitting renders, and the Node CRD-schema validator."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).resolve().parent / "node"
VALIDATOR = NODE_DIR / "validate-crds.mjs"
NPM_INSTALL = "npm ci --prefix tests/gitops/node"

# Kinds that kubernetes-validate knows (built into Kubernetes) and the custom resources it only warns about.
CORE_KINDS = frozenset(
    {
        "Namespace",
        "ServiceAccount",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
)
CRD_KINDS = frozenset(
    {
        "Rollout",
        "AnalysisTemplate",
        "ServiceMonitor",
        "PrometheusRule",
        "Application",
        "AppProject",
    }
)

Manifest = dict[str, Any]


def load_documents(text: str) -> list[Manifest]:
    """The objects of a multi-document YAML text (empty documents dropped)."""
    return [document for document in yaml.safe_load_all(text) if document]


def find(documents: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``) among ``documents``; fails the test when there is not exactly one."""
    matches = [
        document
        for document in documents
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def validate_with_crd_schemas(objects: list[Manifest]) -> list[dict[str, Any]]:
    """Run tests/gitops/node/validate-crds.mjs on ``objects``; one result per object, {kind, name, errors}."""
    node = shutil.which("node")
    assert node is not None, "node (20+) is not on PATH: the CRD schema checks need it"
    assert (NODE_DIR / "node_modules").is_dir(), f"the CRD schema packages are not installed: run `{NPM_INSTALL}`"
    completed = subprocess.run(
        [node, str(VALIDATOR)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode in (0, 1), f"validate-crds.mjs failed to run: {completed.stderr}"
    results: list[dict[str, Any]] = json.loads(completed.stdout)
    assert len(results) == len(objects)
    return results
