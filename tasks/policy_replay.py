"""Replay stored promotion decisions under the current policies, and list every decision that would flip.

Every decision is stored next to its evidence (`store_decision`): a folder of `<bundle_hash>.json` files, each
`{"bundle": ..., "decision": ..., "decided_at": ...}`. A policy author's merge request replays them all
(`replay_decisions`) and shows which past promotions the change would have blocked or let through, with the
rules responsible (`render_replay_markdown`).

Replay decides chunks of bundles with one prepared query per chunk (`InProcessOpa.decide_many`), on up to two
engines in worker threads, while the calling thread reads the next chunk of files: the engine's calls release the
GIL. Measured with `benchmarks/policy.py`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import queue
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from tasks.decision import Decision, DecisionBundle, bundle_hash, canonical_json
from tasks.policy import InProcessOpa, PolicyEngine

__all__ = [
    "Flip",
    "ReplayResult",
    "StoredDecision",
    "load_stored_decision",
    "render_replay_markdown",
    "replay_decisions",
    "store_decision",
]


class StoredDecision(BaseModel):
    """One decision as stored: the evidence, the answer, and when it was given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bundle: DecisionBundle
    decision: Decision
    decided_at: AwareDatetime


def store_decision(
    store_dir: Path,
    bundle: DecisionBundle,
    decision: Decision,
    *,
    decided_at: datetime | None = None,
) -> Path:
    """Write `<bundle_hash>.json` atomically (a reader never sees half a file); returns its path.

    Deciding the same bundle again replaces its file: the store holds the latest decision per bundle.
    """
    digest = bundle_hash(bundle)
    if decision.bundle_hash != digest:
        raise ValueError(f"the decision is for bundle {decision.bundle_hash[:12]}..., not {digest[:12]}...")
    stored = StoredDecision(bundle=bundle, decision=decision, decided_at=decided_at or datetime.now(UTC))
    store_dir.mkdir(parents=True, exist_ok=True)
    target = store_dir / f"{digest}.json"
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=store_dir, suffix=".tmp", delete=False) as handle:
        handle.write(json.dumps(stored.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    os.replace(handle.name, target)
    return target


def load_stored_decision(path: Path) -> tuple[StoredDecision, dict[str, Any]]:
    """The stored decision and its bundle serialised for the engine; raises ValueError when unusable."""
    try:
        stored = StoredDecision.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"not a stored decision: {first}") from error
    document = stored.bundle.model_dump(mode="json")
    # The same digest as bundle_hash(), from the dump already made.
    digest = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    if path.stem != digest:
        raise ValueError(f"the bundle's hash is {digest[:12]}..., not the file name: the file was edited")
    if stored.decision.bundle_hash != digest:
        raise ValueError(f"the stored decision is for bundle {stored.decision.bundle_hash[:12]}..., not this one")
    return stored, document


# Stored decisions read from a chunk of files, each with its bundle serialised for the engine.
_Loaded = list[tuple[StoredDecision, dict[str, Any]]]


@dataclass(frozen=True)
class Flip:
    """A stored decision that the current policies would decide the other way."""

    bundle_hash: str
    model_name: str
    candidate_version: str
    environment: str
    decided_at: datetime
    was_allowed: bool
    now_allowed: bool
    rules: tuple[str, ...]
    messages: tuple[str, ...]

    @property
    def direction(self) -> str:
        return "allow -> deny" if self.was_allowed else "deny -> allow"


@dataclass(frozen=True)
class ReplayResult:
    """What a replay found."""

    policy_digest: str
    replayed: int
    skipped_before_since: int
    flips: tuple[Flip, ...]
    rule_changes: int
    unreadable: tuple[tuple[str, str], ...]
    seconds: float

    @property
    def flipped_to_deny(self) -> int:
        return sum(1 for flip in self.flips if flip.was_allowed)

    @property
    def flipped_to_allow(self) -> int:
        return sum(1 for flip in self.flips if not flip.was_allowed)


def _chunks(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def _result(pending: tuple[_Loaded, Future[list[Decision]]]) -> tuple[_Loaded, list[Decision]]:
    return pending[0], pending[1].result()


def _compare(stored: StoredDecision, now: Decision) -> Flip | None:
    before = stored.decision
    if before.allow == now.allow:
        return None
    if now.allow:
        # deny -> allow: the rules that used to deny are the ones the change relaxed.
        rules = tuple(sorted(before.violation_rules()))
        messages = tuple(v.message for v in before.violations)
    else:
        rules = tuple(sorted(now.violation_rules()))
        messages = tuple(v.message for v in now.violations)
    return Flip(
        bundle_hash=now.bundle_hash,
        model_name=stored.bundle.model_name,
        candidate_version=stored.bundle.candidate_version,
        environment=stored.bundle.environment,
        decided_at=stored.decided_at,
        was_allowed=before.allow,
        now_allowed=now.allow,
        rules=rules,
        messages=messages,
    )


def replay_decisions(
    decision_store_dir: Path,
    policy_engine: PolicyEngine,
    since: datetime | None = None,
    *,
    chunk_size: int = 1000,
    workers: int | None = None,
) -> ReplayResult:
    """Re-decide every stored bundle (decided at or after `since`) and list the decisions that flip.

    Bundles are decided `chunk_size` at a time: one engine call per chunk on an `InProcessOpa`, one request per
    bundle on any other engine. With an `InProcessOpa`, `workers` threads (default: one per core, at most 2)
    each evaluate on their own engine, `policy_engine` and clones of it over the same policy text.
    """
    started = time.perf_counter()
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a naive bound is read as UTC, like every stored timestamp
    paths = sorted(decision_store_dir.glob("*.json")) if decision_store_dir.is_dir() else []
    unreadable: list[tuple[str, str]] = []
    skipped = 0
    replayed = 0
    rule_changes = 0
    flips: list[Flip] = []

    def load(chunk: Sequence[Path]) -> _Loaded:
        nonlocal skipped
        loaded = []
        for path in chunk:
            try:
                stored, document = load_stored_decision(path)
            except ValueError as error:
                unreadable.append((path.name, str(error)))
                continue
            if since is not None and stored.decided_at < since:
                skipped += 1
                continue
            loaded.append((stored, document))
        return loaded

    in_process = isinstance(policy_engine, InProcessOpa) and policy_engine.load_error is None
    workers = max(1, workers or min(2, os.cpu_count() or 1)) if in_process else 1
    # One engine evaluates one query at a time: each worker takes an engine from the pool for each chunk.
    engines: queue.SimpleQueue[PolicyEngine] = queue.SimpleQueue()
    clones = [policy_engine.clone() for _ in range(workers - 1)] if isinstance(policy_engine, InProcessOpa) else []
    for engine in [policy_engine, *clones]:
        engines.put(engine)

    def decide(loaded: _Loaded) -> list[Decision]:
        engine = engines.get()
        try:
            if isinstance(engine, InProcessOpa):
                # load_stored_decision checked that the decision's bundle_hash is the bundle's digest.
                return engine.decide_many([(document, stored.decision.bundle_hash) for stored, document in loaded])
            return [engine.decide(stored.bundle) for stored, _ in loaded]
        finally:
            engines.put(engine)

    def collect(loaded: _Loaded, decisions: list[Decision]) -> None:
        nonlocal replayed, rule_changes
        for (stored, _), now in zip(loaded, decisions, strict=True):
            replayed += 1
            flip = _compare(stored, now)
            if flip is not None:
                flips.append(flip)
            elif now.violation_rules() != stored.decision.violation_rules():
                rule_changes += 1

    # This thread reads chunks of files while the workers decide earlier chunks (the engine's calls release
    # the GIL); results are collected in file order.
    pending: deque[tuple[_Loaded, Future[list[Decision]]]] = deque()
    # Replay allocates millions of short-lived, acyclic objects (parsed bundles, answers); the cyclic collector
    # kept scanning the chunks in flight and cost ~20% of the run. Reference counting frees them all anyway.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="policy-replay") as pool:
            for chunk in _chunks(paths, chunk_size):
                loaded = load(chunk)
                pending.append((loaded, pool.submit(decide, loaded)))
                while len(pending) > workers:
                    collect(*_result(pending.popleft()))
            while pending:
                collect(*_result(pending.popleft()))
    finally:
        if collecting:
            gc.enable()
        for clone in clones:
            clone.close()

    digest = str(getattr(policy_engine, "policy_digest", ""))
    flips.sort(key=lambda flip: (flip.decided_at, flip.bundle_hash))
    return ReplayResult(
        policy_digest=digest,
        replayed=replayed,
        skipped_before_since=skipped,
        flips=tuple(flips),
        rule_changes=rule_changes,
        unreadable=tuple(unreadable),
        seconds=time.perf_counter() - started,
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_replay_markdown(result: ReplayResult) -> str:
    """A merge-request comment: the summary, then every flip with the rules responsible."""
    lines = [
        "## Policy replay",
        "",
        (
            f"Replayed **{result.replayed}** stored decisions under policy digest "
            f"`{result.policy_digest[:12]}` in {result.seconds:.1f} s."
        ),
        "",
        "| outcome | count |",
        "|---|---|",
        f"| allow -> deny | {result.flipped_to_deny} |",
        f"| deny -> allow | {result.flipped_to_allow} |",
        f"| same outcome, different rules | {result.rule_changes} |",
        f"| skipped (decided before --since) | {result.skipped_before_since} |",
        f"| unreadable | {len(result.unreadable)} |",
        "",
    ]
    if result.flips:
        lines += [
            "### Decisions that would flip",
            "",
            "| decided at | model | version | environment | change | rules responsible | bundle |",
            "|---|---|---|---|---|---|---|",
        ]
        for flip in result.flips:
            lines.append(
                f"| {flip.decided_at:%Y-%m-%d %H:%M} | {_cell(flip.model_name)} | {_cell(flip.candidate_version)} "
                f"| {flip.environment} | {flip.direction} | {_cell(', '.join(flip.rules) or '-')} "
                f"| `{flip.bundle_hash[:12]}` |"
            )
        lines.append("")
    else:
        lines += ["No stored decision would flip.", ""]
    if result.unreadable:
        lines += ["### Unreadable stored decisions", ""]
        lines += [f"- `{name}`: {_cell(reason)}" for name, reason in result.unreadable]
        lines.append("")
    return "\n".join(lines)
