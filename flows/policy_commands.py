"""The policy and audit commands, as plain functions the CLI wires in: each prints to stdout, returns an exit code.

No Prefect here: these run in a merge request's CI job and on an on-call laptop, where start-up time matters.
Exit codes: 0 all good, 1 a check failed (a test, an example, a flip, a broken chain), 2 nothing could be checked.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tasks.audit import verify_audit_log
from tasks.policy import InProcessOpa
from tasks.policy_replay import render_replay_markdown, replay_decisions
from tasks.policy_testing import (
    check_policies,
    format_check_result,
    format_test_result,
    run_policy_tests,
    summary_line,
)

__all__ = ["audit_verify", "policy_check", "policy_replay", "policy_test"]


def policy_test(policy_dir: Path) -> int:
    """Run every Rego test with coverage; 0 when all pass (and there is at least one)."""
    result = run_policy_tests(policy_dir)
    print("\n".join(format_test_result(result)))
    if result.load_error:
        return 2
    return 0 if result.ok else 1


def policy_check(policy_dir: Path) -> int:
    """Compile the policies, check the published schema and every example bundle; 0 when all pass."""
    result = check_policies(policy_dir)
    print("\n".join(format_check_result(result)))
    return 0 if result.ok else 1


def policy_replay(policy_dir: Path, store_dir: Path, since: datetime | None, out: Path | None) -> int:
    """Replay stored decisions under the policies in `policy_dir`; 0 when none would flip.

    The Markdown report goes to `out` when given (for the merge request), else to stdout.
    """
    with InProcessOpa(policy_dir) as engine:
        if engine.load_error is not None:
            print(f"ERROR  {engine.load_error.rule}: {engine.load_error.message}")
            return 2
        result = replay_decisions(store_dir, engine, since)
    markdown = render_replay_markdown(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown, encoding="utf-8")
        print(f"replayed {result.replayed} decision(s) in {result.seconds:.2f} s; report written to {out}")
    else:
        print(markdown)
    for flip in result.flips:
        print(
            f"FLIP  {flip.bundle_hash[:12]} {flip.model_name} {flip.candidate_version} "
            f"{flip.environment}: {flip.direction} ({', '.join(flip.rules) or '-'})"
        )
    for name, reason in result.unreadable:
        print(f"UNREADABLE  {name}: {reason}")
    changed = len(result.flips) + len(result.unreadable)
    print(summary_line(result.replayed - len(result.flips), changed))
    return 0 if changed == 0 else 1


def audit_verify(path: Path) -> int:
    """Verify the audit log's hash chain; 0 when intact."""
    result = verify_audit_log(path)
    for problem in result.problems:
        print(f"FAIL  {problem.kind}: {problem.message}")
    print(f"{result.records} record(s), head {result.head_hash}")
    # passed: readable records with no problem of their own; failed: problems found.
    flagged = {p.line for p in result.problems if p.seq is not None and p.kind != "truncated"}
    print(summary_line(result.records - len(flagged), len(result.problems)))
    return 0 if result.ok else 1
