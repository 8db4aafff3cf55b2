"""`opa test` and a policy check without an `opa` binary: the real engine evaluates every test rule.

No `opa` binary can be installed here, so the runner does what `opa test` does with the in-process engine:
it loads the policies, their data and every `*_test.rego`, finds each `test_*` rule with `rego.parse_module`,
evaluates it (a test passes when it is defined and true) and collects the engine's built-in coverage.

`check_policies` is the merge-request gate for policy authors: the policies compile, the published bundle
schema is current, and every example bundle validates against it and gets the decision its file name promises
(`allow_*.json` / `deny_*.json`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.decision import DecisionBundle, bundle_hash, decision_bundle_schema_text
from tasks.policy import InProcessOpa
from tasks.policy_set import PolicyLoadError, build_engine, read_policy_set

__all__ = [
    "CheckItem",
    "FileCoverage",
    "PolicyCheckResult",
    "PolicyTestCase",
    "PolicyTestResult",
    "check_policies",
    "format_check_result",
    "format_test_result",
    "run_policy_tests",
    "summary_line",
]

Outcome = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class PolicyTestCase:
    """One `test_` rule and how it went."""

    package: str
    name: str
    file: str
    line: int
    status: Outcome
    message: str
    seconds: float


@dataclass(frozen=True)
class FileCoverage:
    """Lines of one module that the tests evaluated, out of the lines the engine could evaluate."""

    file: str
    covered_lines: int
    total_lines: int
    not_covered: tuple[int, ...]

    @property
    def share(self) -> float:
        """Covered share in [0, 1]; a file with nothing to evaluate counts as covered."""
        return self.covered_lines / self.total_lines if self.total_lines else 1.0


@dataclass(frozen=True)
class PolicyTestResult:
    """Every test's outcome and the coverage they reached; `load_error` when nothing could run."""

    tests: tuple[PolicyTestCase, ...]
    coverage: tuple[FileCoverage, ...]
    load_error: str | None = None

    @property
    def passed(self) -> int:
        return sum(1 for test in self.tests if test.status == "pass")

    @property
    def failed(self) -> int:
        """Failures and errors; a load error counts as one failure so the run can never look green."""
        return sum(1 for test in self.tests if test.status != "pass") + (1 if self.load_error else 0)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0


@dataclass(frozen=True)
class CheckItem:
    """One thing `check_policies` verified."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class PolicyCheckResult:
    """The outcome of every check, in the order they ran."""

    items: tuple[CheckItem, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> int:
        return sum(1 for item in self.items if item.ok)

    @property
    def failed(self) -> int:
        return sum(1 for item in self.items if not item.ok)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0


# --- running the Rego tests -------------------------------------------------------------------------------


def _test_rules(engine: Any, path: Path, source: str) -> Iterator[tuple[str, str, int]]:
    """(package, rule name, line) for each distinct `test_` rule of a module, in source order."""
    module = engine.eval_query(
        "m := rego.parse_module(input.path, input.source)",
        {"path": str(path), "source": source},
    )
    parsed = module[0]["m"]
    package = ".".join(str(term["value"]) for term in parsed["package"]["path"][1:])
    seen: set[str] = set()
    for rule in parsed.get("rules", []):
        head = rule["head"]
        name = head.get("name") or head["ref"][0]["value"]
        # Several bodies of one test rule are one test (OPA evaluates them as one document).
        if not name.startswith("test_") or name in seen:
            continue
        seen.add(name)
        # The parsed module carries no locations, so find the line of the rule's first definition.
        match = re.search(rf"^(?:default\s+)?{re.escape(name)}\b", source, flags=re.MULTILINE)
        line = source.count("\n", 0, match.start()) + 1 if match else 0
        yield package, name, line


def _rows(ranges: list[dict[str, Any]]) -> set[int]:
    rows: set[int] = set()
    for span in ranges or []:
        rows.update(range(span["start"]["row"], span["end"]["row"] + 1))
    return rows


def run_policy_tests(policy_dir: Path, *, coverage: bool = True) -> PolicyTestResult:
    """Evaluate every `test_` rule of every `*_test.rego` under `policy_dir`.

    With `coverage` (the default) each test is traced and the lines any test reached are reported per file;
    tracing makes each test several times slower.
    """
    try:
        policy_set = read_policy_set(policy_dir)
        engine = build_engine(policy_set, include_tests=True)
    except PolicyLoadError as error:
        return PolicyTestResult(tests=(), coverage=(), load_error=error.message)
    from opa_bindings import OpaError

    cases: list[PolicyTestCase] = []
    covered: dict[str, set[int]] = {}
    seen_rows: dict[str, set[int]] = {}
    try:
        for path, source in policy_set.tests:
            for package, name, line in _test_rules(engine, path, source):
                started = time.perf_counter()
                status: Outcome
                try:
                    # One query string per package, the test named in the input: the engine prepares (compiles)
                    # once per query string, so a query per test would recompile every module for every test.
                    # The test itself sees an empty input, as near as a query can get to opa test's none.
                    query = f"name := input.name; result := data.{package}[name] with input as {{}}"
                    bindings = engine.eval_query(query, {"name": name}, coverage=coverage)
                    value = bindings[0]["result"] if bindings else None
                    if value is True:
                        status, message = "pass", ""
                    elif bindings:
                        status, message = "fail", f"evaluated to {value!r}"
                    else:
                        status, message = (
                            "fail",
                            "undefined (a condition in the test was false)",
                        )
                except OpaError as error:
                    status, message = "error", error.message
                seconds = time.perf_counter() - started
                report = engine.last_coverage or {}
                for file, figures in (report.get("files") or {}).items():
                    # Coverage is per evaluation; a line counts as covered when any test reached it.
                    covered.setdefault(file, set()).update(_rows(figures.get("covered")))
                    seen_rows.setdefault(file, set()).update(
                        _rows(figures.get("covered")) | _rows(figures.get("not_covered"))
                    )
                cases.append(PolicyTestCase(package, name, str(path), line, status, message, seconds))
    finally:
        engine.close()
    files = tuple(
        FileCoverage(
            file=file,
            covered_lines=len(covered.get(file, set())),
            total_lines=len(rows),
            not_covered=tuple(sorted(rows - covered.get(file, set()))),
        )
        for file, rows in sorted(seen_rows.items())
    )
    return PolicyTestResult(tests=tuple(cases), coverage=files)


# --- checking the policy folder ------------------------------------------------------------------------


def _expected_outcome(example: Path) -> bool | None:
    if example.name.startswith("allow_"):
        return True
    if example.name.startswith("deny_"):
        return False
    return None


def check_policies(policy_dir: Path) -> PolicyCheckResult:
    """Compile the policies and tests, check the published schema and every example bundle."""
    import jsonschema  # type: ignore[import-untyped]

    items: list[CheckItem] = []
    try:
        policy_set = read_policy_set(policy_dir)
        build_engine(policy_set, include_tests=True).close()
        modules = len(policy_set.modules) + len(policy_set.tests)
        items.append(
            CheckItem(
                "compile",
                True,
                f"{modules} module(s) and {len(policy_set.data)} data file(s)",
            )
        )
    except PolicyLoadError as error:
        items.append(CheckItem("compile", False, error.message))

    schema_path = policy_dir / "decision_bundle.schema.json"
    schema: dict[str, Any] | None = None
    try:
        committed = schema_path.read_text(encoding="utf-8")
        schema = json.loads(committed)
        current = committed == decision_bundle_schema_text()
        detail = "matches DecisionBundle" if current else "out of date: run `python -m tasks.decision` and commit"
        items.append(CheckItem(schema_path.name, current, detail))
    except (OSError, json.JSONDecodeError) as error:
        items.append(CheckItem(schema_path.name, False, f"cannot read the schema: {error}"))

    examples = sorted((policy_dir / "examples").glob("*.json"))
    if not examples:
        items.append(CheckItem("examples", False, f"no example bundles under {policy_dir / 'examples'}"))
    validator = jsonschema.Draft202012Validator(schema) if schema is not None else None
    with InProcessOpa(policy_dir) as engine:
        for example in examples:
            items.append(_check_example(example, validator, engine))
    return PolicyCheckResult(items=tuple(items))


def _check_example(example: Path, validator: Any, engine: InProcessOpa) -> CheckItem:
    name = f"examples/{example.name}"
    expected = _expected_outcome(example)
    if expected is None:
        return CheckItem(name, False, "file name must start with allow_ or deny_")
    try:
        document = json.loads(example.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        return CheckItem(name, False, f"not readable JSON: {error}")
    if validator is not None:
        problems = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        if problems:
            where = "/".join(str(part) for part in problems[0].absolute_path) or "(root)"
            return CheckItem(name, False, f"violates the schema at {where}: {problems[0].message}")
    bundle = DecisionBundle.model_validate(document)
    decision = engine.decide(bundle)
    outcome = "allow" if decision.allow else "deny"
    rules = ", ".join(sorted(decision.violation_rules())) or "no violations"
    if decision.allow != expected:
        return CheckItem(
            name,
            False,
            f"expected {'allow' if expected else 'deny'}, policy says {outcome} ({rules})",
        )
    return CheckItem(name, True, f"{outcome} ({rules}); bundle {bundle_hash(bundle)[:12]}")


# --- output ------------------------------------------------------------------------------------------


def summary_line(passed: int, failed: int) -> str:
    """The closing line, alone on its line: `N passed, N failed`."""
    return f"{passed} passed, {failed} failed"


def format_test_result(result: PolicyTestResult) -> list[str]:
    """One line per test, the coverage per file, and the summary line last."""
    lines: list[str] = []
    if result.load_error:
        lines.append(f"ERROR  policies did not load: {result.load_error}")
    for test in result.tests:
        label = {"pass": "PASS ", "fail": "FAIL ", "error": "ERROR"}[test.status]
        where = f"{test.file}:{test.line}"
        suffix = f": {test.message}" if test.message else ""
        lines.append(f"{label}  {test.package}.{test.name} ({where}, {test.seconds * 1000:.1f} ms){suffix}")
    if result.coverage:
        lines.append("coverage:")
        for file in result.coverage:
            lines.append(f"  {file.file}: {file.share:.1%} ({file.covered_lines}/{file.total_lines} lines)")
    lines.append(summary_line(result.passed, result.failed))
    return lines


def format_check_result(result: PolicyCheckResult) -> list[str]:
    """One line per check and the summary line last."""
    lines = [f"{'PASS ' if item.ok else 'FAIL '}  {item.name}: {item.detail}" for item in result.items]
    lines.append(summary_line(result.passed, result.failed))
    return lines
