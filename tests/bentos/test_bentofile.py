"""The bentofile ships every project module the service imports, and nothing from the layers it must not use.

A module the service imports but the bentofile leaves out works in the repository and fails only in a built bento;
following the imports from `bentos/service.py` finds it before a build does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tasks.lineage import PROJECT_ROOT

BENTOFILE = PROJECT_ROOT / "bentos" / "bentofile.yaml"
PROJECT_PACKAGES = ("tasks", "bentos", "flows")


def imported_project_modules(path: Path) -> set[str]:
    """Project modules `path` imports (anywhere in the file, lazy imports included), as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            # `from tasks import fast_json` names a module; `from tasks.model import ScoringModel` a module's member.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PROJECT_PACKAGES)
    return {name for name in found if module_file(name).is_file()}


def module_file(name: str) -> Path:
    return PROJECT_ROOT / (name.replace(".", "/") + ".py")


def service_closure() -> set[str]:
    """Every project module reachable from the service by imports, with the packages' __init__ files."""
    seen: set[str] = set()
    pending = ["bentos.service"]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(imported_project_modules(module_file(name)) - seen)
    files = {module_file(name).relative_to(PROJECT_ROOT).as_posix() for name in seen}
    return files | {f"{name.split('.')[0]}/__init__.py" for name in seen}


def test_the_bentofile_includes_every_module_the_service_imports() -> None:
    # given the bentofile's include list
    include = set(yaml.safe_load(BENTOFILE.read_text(encoding="utf-8"))["include"])
    # when the service's imports are followed through the project's modules
    needed = service_closure()
    # then each of them is shipped, and the scorer reaches neither the flows nor the training-only modules
    assert "bentos/engine.py" in needed and "tasks/model.py" in needed  # the walk follows imports at all
    assert needed - include == set()
    assert not any(path.startswith("flows/") for path in needed)
    assert not {"tasks/registry.py", "tasks/train.py", "tasks/evaluate.py"} & needed
