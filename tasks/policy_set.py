"""A policy folder read into memory, and the real OPA engine built from it.

The folder layout is a contract shared by the adapter, the test runner and replay:

- every `*.rego` under the folder is a policy module, except `*_test.rego`, which are tests;
- every `data/<name>.json` is a configuration document loaded at `data.scoregate.config.<name>`
  (thresholds and windows are data, so a change to them is a data diff, not a code change).

The files are read once into a `PolicySet`; its digest and every engine built from it describe the same bytes,
even if the folder changes on disk meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DATA_PATH",
    "RULE_COMPILE_ERROR",
    "RULE_UNAVAILABLE",
    "PolicyLoadError",
    "PolicySet",
    "build_engine",
    "policy_digest",
    "read_policy_set",
]

CONFIG_DATA_PATH = "scoregate.config"
RULE_COMPILE_ERROR = "policy.compile_error"
RULE_UNAVAILABLE = "policy.unavailable"


class PolicyLoadError(Exception):
    """The policies or their data could not be read, parsed or compiled; `rule` names the kind of failure."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True)
class PolicySet:
    """The text of a policy folder: modules and tests by path, data documents by file."""

    root: Path
    modules: tuple[tuple[Path, str], ...]
    tests: tuple[tuple[Path, str], ...]
    data: tuple[tuple[Path, bytes], ...]

    @property
    def digest(self) -> str:
        """sha256 over the sorted policy modules and data files (relative path and content); tests excluded."""
        digest = hashlib.sha256()
        entries = [(path, text.encode("utf-8")) for path, text in self.modules] + list(self.data)
        for path, content in sorted(entries, key=lambda entry: entry[0].relative_to(self.root).as_posix()):
            # The relative path is hashed too: moving a rule to another file is a change worth seeing.
            digest.update(path.relative_to(self.root).as_posix().encode("utf-8") + b"\0")
            digest.update(len(content).to_bytes(8, "big") + content)
        return digest.hexdigest()


def read_policy_set(policy_dir: Path) -> PolicySet:
    """Read every module, test and data file under `policy_dir` (sorted). Raises `PolicyLoadError`."""
    try:
        rego = sorted(policy_dir.rglob("*.rego"))
        modules = tuple((p, p.read_text(encoding="utf-8")) for p in rego if not p.name.endswith("_test.rego"))
        tests = tuple((p, p.read_text(encoding="utf-8")) for p in rego if p.name.endswith("_test.rego"))
        data = tuple((p, p.read_bytes()) for p in sorted((policy_dir / "data").glob("*.json")))
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyLoadError(RULE_UNAVAILABLE, f"cannot read policies under {policy_dir}: {error}") from error
    if not modules:
        raise PolicyLoadError(RULE_UNAVAILABLE, f"no .rego policy files under {policy_dir}")
    return PolicySet(root=policy_dir, modules=modules, tests=tests, data=data)


def policy_digest(policy_dir: Path) -> str:
    """sha256 over the sorted policy and data files of a folder. Raises `PolicyLoadError` if unreadable."""
    return read_policy_set(policy_dir).digest


def build_engine(policy_set: PolicySet, *, include_tests: bool = False) -> Any:
    """A compiled `opa_bindings.OpaEngine` holding the set's modules (and tests if asked) and data.

    Raises `PolicyLoadError`. Parse and compile errors name the file and line, because each module is added
    under its file path and the engine reports errors by module path.
    """
    try:
        from opa_bindings import OpaEngine, OpaError
    except ImportError as error:  # installed outside uv.lock (see STACK.md), so it can be missing
        raise PolicyLoadError(RULE_UNAVAILABLE, f"the OPA engine (opa_bindings) is not installed: {error}") from error

    documents: list[tuple[str, Any]] = []
    for path, content in policy_set.data:
        try:
            documents.append((f"{CONFIG_DATA_PATH}.{path.stem}", json.loads(content)))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            line = getattr(error, "lineno", 1)
            raise PolicyLoadError(
                RULE_COMPILE_ERROR,
                f"{path}:{line}: data file is not valid JSON: {error}",
            ) from error

    engine = OpaEngine()
    try:
        for path, text in policy_set.modules + (policy_set.tests if include_tests else ()):
            engine.add_policy(str(path), text)
        for data_path, document in documents:
            engine.add_data(document, path=data_path)
        # Parse errors surface in add_policy, type and safety errors only when the modules are first compiled
        # together: a trivial query forces that now, so a broken policy fails at load rather than mid-decision.
        engine.eval_query("true")
    except OpaError as error:
        engine.close()
        raise PolicyLoadError(
            RULE_COMPILE_ERROR,
            f"policies under {policy_set.root} do not compile: {error.message}",
        ) from error
    return engine
