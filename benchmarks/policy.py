"""Policy decision latency and replay speed with the in-process OPA engine.

Prints absolute figures (p50/p99 of 1,000 single decisions; wall time to replay 10,000 stored decisions)
and, as ratios, how they compare with a baseline run in the same process: a trivial evaluation on a bare
engine, which is the fixed cost of one call across the C boundary.

    uv run --frozen python benchmarks/policy.py [--decisions 1000] [--stored 10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from opa_bindings import OpaEngine

from tasks.decision import DecisionBundle, bundle_hash
from tasks.policy import InProcessOpa
from tasks.policy_replay import replay_decisions, store_decision

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"


def _examples() -> list[DecisionBundle]:
    paths = sorted((POLICY_DIR / "examples").glob("*.json"))
    return [DecisionBundle.model_validate_json(path.read_text(encoding="utf-8")) for path in paths]


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def bench_decisions(engine: InProcessOpa, bundles: list[DecisionBundle], count: int) -> float:
    """Single-decision latency, the path a promotion takes."""
    for bundle in bundles:  # warm up: the first evaluation prepares (compiles) the query
        engine.decide(bundle)
    samples = []
    for index in range(count):
        bundle = bundles[index % len(bundles)]
        started = time.perf_counter()
        engine.decide(bundle)
        samples.append(time.perf_counter() - started)
    # The baseline: a trivial rule on a bare engine, i.e. the fixed cost of one call across the C boundary.
    baseline = []
    with OpaEngine() as bare:
        bare.add_policy("baseline.rego", "package baseline\n\nvalue := 1\n")
        bare.eval_document("baseline.value")
        for _ in range(count):
            started = time.perf_counter()
            bare.eval_document("baseline.value")
            baseline.append(time.perf_counter() - started)
    p50, p99 = _percentile(samples, 0.50), _percentile(samples, 0.99)
    floor = statistics.median(baseline)
    print(f"decision latency over {count} decisions: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
    print(
        f"  baseline (trivial eval, bare engine): p50 {floor * 1e3:.3f} ms; decision p50 = {p50 / floor:.1f}x baseline"
    )
    return p50


def bench_replay(engine: InProcessOpa, bundles: list[DecisionBundle], count: int) -> float:
    """Replay of `count` stored decisions, none of which flips (the policies are unchanged)."""
    decisions = {bundle_hash(bundle): engine.decide(bundle) for bundle in bundles}
    with tempfile.TemporaryDirectory(prefix="scoregate-replay-") as tmp:
        store = Path(tmp)
        started = time.perf_counter()
        for index in range(count):
            source = bundles[index % len(bundles)]
            # A distinct snapshot hash per copy gives distinct bundle hashes without changing any decision.
            bundle = source.model_copy(update={"snapshot_hash": f"sha256:{index:064x}"})
            decision = decisions[bundle_hash(source)].model_copy(update={"bundle_hash": bundle_hash(bundle)})
            store_decision(store, bundle, decision)
        print(f"stored {count} decisions in {time.perf_counter() - started:.2f} s (set-up, not measured)")
        started, cpu_started = time.perf_counter(), time.process_time()
        result = replay_decisions(store, engine)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    assert result.replayed == count and not result.flips and not result.unreadable, result
    per_decision = seconds / count
    print(f"replay of {count} stored decisions: {seconds:.2f} s ({per_decision * 1e3:.3f} ms per decision)")
    # CPU time over wall time shows how much of the two cores the replay got: on a busy machine it is near 1.
    print(f"  process CPU time {cpu_seconds:.2f} s ({cpu_seconds / count * 1e3:.3f} ms per decision)")
    return per_decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--stored", type=int, default=10_000)
    args = parser.parse_args()
    bundles = _examples()
    with InProcessOpa(POLICY_DIR) as engine:
        if engine.load_error is not None:
            raise SystemExit(f"policies did not load: {engine.load_error.message}")
        p50 = bench_decisions(engine, bundles, args.decisions)
        per_replayed = bench_replay(engine, bundles, args.stored)
    print(f"replay cost per decision = {per_replayed / p50:.2f}x a single decision's p50")


if __name__ == "__main__":
    main()
