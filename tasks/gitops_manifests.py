"""The release each environment runs, and the manifests kustomize renders from it.

A GitOps repository holds ``gitops/`` as laid out in this project: a kustomize base, one overlay per environment
and the Argo CD Applications. What a promotion changes lives in one small file per overlay,
``gitops/overlays/<env>/release.yaml`` (a local-only ConfigMap whose five values ``gitops/components/release``
copies into the scorer's Rollout). This module is the only code that writes those files:

- `read_release` / `write_release` read and rewrite the release of an environment, editing the five values in
  place and leaving every other byte of the file (comments, order, spacing) as it was;
- `render_overlay` / `render_all` run ``kubectl kustomize`` on the overlays, and `ManifestRenderError` says which
  overlay failed and why when a hand edit broke one;
- ``python -m tasks.gitops_manifests render --out gitops/rendered`` regenerates the committed golden renders
  (``--check`` only compares), which make every change to the manifests a reviewable diff.

Plain Python: no Prefect or MLflow import, so the flows wrap it and the tests call it directly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ENVIRONMENTS",
    "ManifestError",
    "ManifestRenderError",
    "Release",
    "ReleaseFileError",
    "main",
    "overlay_dir",
    "read_release",
    "release_path",
    "render_all",
    "render_argocd",
    "render_overlay",
    "write_release",
    "write_rendered",
]

ENVIRONMENTS: Final = ("staging", "production")

_GITOPS_DIR: Final = "gitops"
_RELEASE_FILE: Final = "release.yaml"
_RELEASE_CONFIGMAP: Final = "scoregate-release"
_KUSTOMIZE_TIMEOUT_S: Final = 60.0

# Release field -> key under `data:` in release.yaml (camelCase, as Kubernetes objects spell keys).
_DATA_KEYS: Final[dict[str, str]] = {
    "model_name": "modelName",
    "model_version": "modelVersion",
    "bento_tag": "bentoTag",
    "image_tag": "imageTag",
    "bento_digest": "bentoDigest",
}


class ManifestError(Exception):
    """A GitOps manifest could not be read, written or rendered."""


class ReleaseFileError(ManifestError):
    """An overlay's release.yaml is missing, malformed, or holds values that are not a valid release."""


class ManifestRenderError(ManifestError):
    """``kubectl kustomize`` failed on an overlay (or kubectl is missing); the message names the overlay."""


class Release(BaseModel):
    """What an environment runs: the registered model version and the bento image that serves it.

    Each value lands in a Kubernetes label, annotation, environment variable or image reference, so each is
    constrained to what those accept (the model version is a label value, the image tag a container image tag).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=253,
        description="The MLflow registered model name.",
    )
    model_version: str = Field(
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
        max_length=63,
        description="The MLflow model version (a Kubernetes label value).",
    )
    bento_tag: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*:[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=256,
        description="The bento's tag, name:version.",
    )
    image_tag: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        max_length=128,
        description="The tag of the scorer image built from the bento.",
    )
    bento_digest: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="sha256 digest of the bento, 'sha256:<64 hex>'.",
    )


def _check_env(env: str) -> None:
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r}; expected one of {', '.join(ENVIRONMENTS)}")


def overlay_dir(repo_root: Path, env: str) -> Path:
    """The kustomize overlay directory of an environment: ``<repo_root>/gitops/overlays/<env>``."""
    _check_env(env)
    return Path(repo_root) / _GITOPS_DIR / "overlays" / env


def release_path(repo_root: Path, env: str) -> Path:
    """The release file of an environment: ``<repo_root>/gitops/overlays/<env>/release.yaml``."""
    return overlay_dir(repo_root, env) / _RELEASE_FILE


def _parse_release(path: Path, text: str) -> Release:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReleaseFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ReleaseFileError(f"{path}: expected a ConfigMap named {_RELEASE_CONFIGMAP}, found no mapping")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if document.get("kind") != "ConfigMap" or name != _RELEASE_CONFIGMAP:
        raise ReleaseFileError(f"{path}: expected a ConfigMap named {_RELEASE_CONFIGMAP}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise ReleaseFileError(f"{path}: the ConfigMap has no data mapping")
    fields_by_key = {key: field for field, key in _DATA_KEYS.items()}
    unknown = sorted(str(key) for key in data if key not in fields_by_key)
    if unknown:
        raise ReleaseFileError(
            f"{path}: unknown keys under data: {', '.join(unknown)}; expected {', '.join(_DATA_KEYS.values())}"
        )
    try:
        return Release.model_validate({fields_by_key[key]: value for key, value in data.items()})
    except ValidationError as exc:
        raise ReleaseFileError(f"{path}: not a valid release: {exc}") from exc


def read_release(repo_root: Path, env: str) -> Release:
    """The release an environment's overlay names (raises `ReleaseFileError` when the file is broken)."""
    path = release_path(repo_root, env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReleaseFileError(f"{path}: cannot read the {env} release: {exc}") from exc
    return _parse_release(path, text)


def _split_scalar(rest: str) -> tuple[str, str]:
    """Split what follows ``key:`` into the scalar's own text and what trails it (spaces, a comment, the EOL)."""
    body = rest.rstrip("\r\n")
    eol = rest[len(body) :]
    stripped = body.lstrip(" ")
    lead = body[: len(body) - len(stripped)]
    end: int
    if stripped.startswith('"'):
        end, escaped = -1, False
        for index in range(1, len(stripped)):
            char = stripped[index]
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                end = index + 1
                break
        if end < 0:
            raise ValueError("unterminated double-quoted value")
    elif stripped.startswith("'"):
        index = 1
        end = -1
        while index < len(stripped):
            if stripped[index] == "'":
                # '' is an escaped quote inside single quotes.
                if stripped[index + 1 : index + 2] == "'":
                    index += 2
                    continue
                end = index + 1
                break
            index += 1
        if end < 0:
            raise ValueError("unterminated single-quoted value")
    else:
        comment = stripped.find(" #")
        end = len(stripped) if comment < 0 else comment
        end = len(stripped[:end].rstrip(" "))
    return lead + stripped[:end], stripped[end:] + eol


def _rewrite_data_values(path: Path, text: str, values: dict[str, str]) -> str:
    """Return ``text`` with each ``data:`` key's scalar replaced by a double-quoted new value, nothing else changed."""
    lines = text.splitlines(keepends=True)
    data_line = next(
        (i for i, line in enumerate(lines) if line.rstrip("\r\n").rstrip(" ") == "data:"),
        None,
    )
    if data_line is None:
        raise ReleaseFileError(f"{path}: no top-level 'data:' block mapping to edit")
    seen: set[str] = set()
    for index in range(data_line + 1, len(lines)):
        line = lines[index]
        content = line.rstrip("\r\n")
        if not content.strip() or content.lstrip().startswith("#"):
            continue
        if not content.startswith((" ", "\t")):
            break  # back at the top level: the data block has ended
        key, colon, rest = content.lstrip(" ").partition(":")
        if not colon or key not in values:
            continue
        if key in seen:
            raise ReleaseFileError(f"{path}: key {key!r} appears twice under data:")
        seen.add(key)
        try:
            old_scalar, trailing = _split_scalar(rest + line[len(content) :])
        except ValueError as exc:
            raise ReleaseFileError(f"{path}: line {index + 1}: {exc}") from exc
        spacing = old_scalar[: len(old_scalar) - len(old_scalar.lstrip(" "))] or " "
        indent = content[: len(content) - len(content.lstrip(" "))]
        # JSON strings are valid YAML double-quoted scalars: a value stays a string whatever it looks like.
        lines[index] = f"{indent}{key}:{spacing}{json.dumps(values[key])}{trailing}"
    missing = sorted(set(values) - seen)
    if missing:
        raise ReleaseFileError(f"{path}: no {', '.join(missing)} under data: to update")
    return "".join(lines)


def _write_atomically(path: Path, text: str) -> None:
    # A promotion interrupted mid-write must leave the old release, never half a file.
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file private (0600): keep the mode the file had (a new one gets rw-r--r--).
        os.fchmod(handle, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_release(repo_root: Path, env: str, release: Release) -> list[Path]:
    """Point an environment's overlay at ``release``; return the files that changed (none if it already did).

    Only the five values under ``data:`` in release.yaml are rewritten; comments and layout stay byte for byte.
    """
    path = release_path(repo_root, env)
    read_release(repo_root, env)  # refuses to edit a file that is already broken
    # Bytes, not read_text: keep the file's own line endings.
    text = path.read_bytes().decode("utf-8")
    values = {_DATA_KEYS[field]: str(value) for field, value in release.model_dump().items()}
    updated = _rewrite_data_values(path, text, values)
    # The edit is textual, so check it the other way round: the file must now parse to exactly this release, and
    # everything outside data: must parse as before.
    if _parse_release(path, updated) != release:
        raise ReleaseFileError(f"{path}: rewriting the release did not round-trip; file left unchanged")
    before, after = yaml.safe_load(text), yaml.safe_load(updated)
    before.pop("data"), after.pop("data")
    if before != after:
        raise ReleaseFileError(f"{path}: rewriting the release changed more than data:; file left unchanged")
    if updated == text:
        return []
    _write_atomically(path, updated)
    return [path]


def _kustomize(directory: Path, what: str, kubectl: str | None) -> str:
    executable = kubectl or shutil.which("kubectl")
    if executable is None:
        raise ManifestRenderError(
            f"cannot render {what}: kubectl is not on PATH (kubectl >= 1.27, which embeds kustomize 5, is needed)"
        )
    if not directory.is_dir():
        raise ManifestRenderError(f"cannot render {what}: {directory} is not a directory")
    try:
        completed = subprocess.run(
            [executable, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=_KUSTOMIZE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ManifestRenderError(f"cannot render {what} ({directory}): {exc}") from exc
    if completed.returncode != 0:
        message = completed.stderr.strip() or f"exit status {completed.returncode}"
        raise ManifestRenderError(f"kustomize could not render {what} ({directory}): {message}")
    return completed.stdout


def render_overlay(repo_root: Path, env: str, *, kubectl: str | None = None) -> str:
    """The manifests an environment's overlay renders to: the output of ``kubectl kustomize <overlay>``."""
    return _kustomize(overlay_dir(repo_root, env), f"the {env} overlay", kubectl)


def render_all(repo_root: Path, *, kubectl: str | None = None) -> dict[str, str]:
    """`render_overlay` for every environment, keyed by environment name."""
    return {env: render_overlay(repo_root, env, kubectl=kubectl) for env in ENVIRONMENTS}


def render_argocd(repo_root: Path, *, kubectl: str | None = None) -> str:
    """The Argo CD objects (AppProject and Applications) that ``gitops/argocd`` renders to."""
    return _kustomize(Path(repo_root) / _GITOPS_DIR / "argocd", "the Argo CD applications", kubectl)


def write_rendered(repo_root: Path, out_dir: Path, *, check: bool = False, kubectl: str | None = None) -> list[Path]:
    """Write ``<out_dir>/<env>.yaml`` for every environment; return the files that were (or, with check, would be)
    changed."""
    stale: list[Path] = []
    for env, rendered in render_all(repo_root, kubectl=kubectl).items():
        target = Path(out_dir) / f"{env}.yaml"
        current = target.read_bytes().decode("utf-8") if target.is_file() else None
        if current == rendered:
            continue
        stale.append(target)
        if not check:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, rendered)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tasks.gitops_manifests render [--repo-root DIR] [--out DIR] [--check]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tasks.gitops_manifests",
        description="Render the GitOps overlays to their golden files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="regenerate the golden renders of every overlay")
    render.add_argument(
        "--repo-root",
        type=Path,
        default=Path("."),
        help="the directory holding gitops/",
    )
    render.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write <env>.yaml (gitops/rendered)",
    )
    render.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a render is out of date",
    )
    args = parser.parse_args(argv)
    out_dir = args.out if args.out is not None else args.repo_root / _GITOPS_DIR / "rendered"
    try:
        changed = write_rendered(args.repo_root, out_dir, check=args.check)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and changed:
        print("run: python -m tasks.gitops_manifests render", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
