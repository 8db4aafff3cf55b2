"""The BentoML adapter: build a bento for a registered model version with `bentoml build` (no Docker).

The build folder holds the service, the scoring core it imports, the model JSON and a manifest with the model's
SHA-256; the service refuses to start when the digest does not match. The bento's own digest (over every file in the
bento) goes back to MLflow and into the promotion's lineage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from tasks.lineage import PROJECT_ROOT
from tasks.settings import Settings

__all__ = ["BentoBuildError", "BentoRecord", "bento_digest", "build_bento"]

BENTOFILE = PROJECT_ROOT / "bentos" / "bentofile.yaml"
_TAG_LINE = re.compile(r"__tag__:(?P<tag>[\w.\-]+:[\w.\-]+)")


class BentoBuildError(RuntimeError):
    """`bentoml build` failed; the message carries the end of its output."""


class BentoRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    digest: str
    path: str


def bento_digest(bento_dir: Path) -> str:
    """SHA-256 over every file's relative path and content, in a fixed order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in bento_dir.rglob("*") if p.is_file()):
        digest.update(file.relative_to(bento_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _stage_build_context(folder: Path, model_path: Path, manifest: dict[str, Any]) -> None:
    bentofile = yaml.safe_load(BENTOFILE.read_text(encoding="utf-8"))
    for pattern in bentofile["include"]:
        if pattern.startswith("model/"):
            continue
        source = PROJECT_ROOT / pattern
        (folder / pattern).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, folder / pattern)
    (folder / "model").mkdir()
    shutil.copy2(model_path, folder / "model" / "scoring_model.json")
    (folder / "model" / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    shutil.copy2(BENTOFILE, folder / "bentofile.yaml")


def build_bento(
    settings: Settings, model_path: Path, manifest: dict[str, Any], *, name: str, version: str
) -> BentoRecord:
    """Build and return the bento's tag, digest and store path."""
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        **settings.environment(),
        # bentoml looks for `uv` (or pip) on PATH while building; the project's own environment carries uv.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with tempfile.TemporaryDirectory(prefix="bento-build-", dir=settings.home) as context:
        folder = Path(context)
        _stage_build_context(folder, model_path, manifest)
        command = [
            str(venv_bin / "bentoml"),
            "build",
            "-f",
            "bentofile.yaml",
            "--name",
            name,
            "--version",
            version,
            "-o",
            "tag",
            str(folder),
        ]
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    match = _TAG_LINE.search(result.stdout)
    if result.returncode != 0 or match is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BentoBuildError(f"bentoml build failed (exit {result.returncode}): {' | '.join(tail)}")
    tag = match.group("tag")
    bento_name, bento_version = tag.split(":", 1)
    bento_dir = settings.bentoml_home / "bentos" / bento_name / bento_version
    return BentoRecord(tag=tag, digest=bento_digest(bento_dir), path=str(bento_dir))
