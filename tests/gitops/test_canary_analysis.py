"""The canary analysis is the one parseable definition of a good canary, and its PromQL computes what it claims.

The PromQL checks run each query on synthetic series with promtool (Debian's `prometheus` package), which
evaluates PromQL offline exactly as Prometheus does.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.canary import condition_holds
from tasks.gitops_manifests import ENVIRONMENTS
from tests.gitops.helpers import Manifest, find

ARGS = re.compile(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}")
METRICS = {
    "error-rate",
    "p95-latency",
    "score-psi",
    "decline-rate-ratio",
    "input-rejection-rate",
}
SCORE_BUCKETS = [
    "0.01",
    "0.02",
    "0.05",
    "0.1",
    "0.2",
    "0.3",
    "0.5",
    "0.7",
    "0.9",
    "+Inf",
]
NAMESPACE = "scoregate-test"


def evaluate_condition(condition: str, value: float) -> bool:
    """The condition as `scoregate canary check` judges it (the template promises plain comparisons of result[0])."""
    return condition_holds(condition, value)


def _metrics(documents: list[Manifest]) -> dict[str, dict[str, Any]]:
    template = find(documents, "AnalysisTemplate", "scoregate-canary")
    return {metric["name"]: metric for metric in template["spec"]["metrics"]}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_metric_is_self_contained_and_parseable(env: str, rendered_documents: dict[str, list[Manifest]]) -> None:
    # given the canary AnalysisTemplate the environment deploys
    metrics = _metrics(rendered_documents[env])

    # when each metric's query, address and condition are inspected
    # then there are the five checks, each with a schedule and a failure budget, each query using no argument
    # but the namespace, and each condition a plain comparison of result[0]
    assert set(metrics) == METRICS
    for name, metric in metrics.items():
        prometheus = metric["provider"]["prometheus"]
        assert prometheus["address"] == "{{args.prometheus-address}}", name
        assert set(ARGS.findall(prometheus["query"])) == {"namespace"}, name
        assert isinstance(condition_holds(metric["successCondition"], 0.0), bool), name
        assert metric["interval"] and int(metric["count"]) > 0 and int(metric["failureLimit"]) >= 0, name


def test_condition_evaluation_follows_the_comparisons() -> None:
    # given the template's two forms of condition
    # when values inside and outside the bounds are evaluated
    # then the bounds decide, and NaN (no traffic to judge) never passes
    assert evaluate_condition("result[0] <= 0.01", 0.01)
    assert not evaluate_condition("result[0] <= 0.01", 0.0101)
    assert evaluate_condition("result[0] >= 0.5 && result[0] <= 2.0", 1.5)
    assert not evaluate_condition("result[0] >= 0.5 && result[0] <= 2.0", 2.5)
    assert not evaluate_condition("result[0] <= 0.25", math.nan)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_analysis_step_supplies_the_template_arguments(
    env: str, rendered_documents: dict[str, list[Manifest]]
) -> None:
    # given the Rollout and the AnalysisTemplate of the environment
    documents = rendered_documents[env]
    rollout = find(documents, "Rollout", "scoregate-scorer")
    template = find(documents, "AnalysisTemplate", "scoregate-canary")
    declared = {arg["name"] for arg in template["spec"]["args"]}

    # when the canary's analysis steps are collected
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    analyses = [step["analysis"] for step in steps if "analysis" in step]

    # then there is one right after the first 10% step, and each names the template and passes every argument
    assert declared == {"prometheus-address", "namespace"}
    assert steps[0] == {"setWeight": 10} and "analysis" in steps[1]
    for analysis in analyses:
        assert analysis["templates"] == [{"templateName": "scoregate-canary"}]
        args = {arg["name"]: arg for arg in analysis["args"]}
        assert set(args) == declared
        assert args["namespace"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_production_canary_is_slower_and_ends_with_a_manual_gate(
    rendered_documents: dict[str, list[Manifest]],
) -> None:
    # given the canary steps of both environments
    def steps(env: str) -> list[dict[str, Any]]:
        rollout = find(rendered_documents[env], "Rollout", "scoregate-scorer")
        return list(rollout["spec"]["strategy"]["canary"]["steps"])

    staging, production = steps("staging"), steps("production")

    # when their weights, analyses and pauses are compared
    def weights(sequence: list[dict[str, Any]]) -> list[int]:
        return [step["setWeight"] for step in sequence if "setWeight" in step]

    # then both go 10 -> 25 -> 50, production analyses more often, and its last step is an indefinite pause
    assert weights(staging) == weights(production) == [10, 25, 50]
    assert sum("analysis" in step for step in production) > sum("analysis" in step for step in staging)
    assert production[-1] == {"pause": {}}
    assert all(step.get("pause", {}).get("duration") for step in staging if "pause" in step)


def _series(metric: str, labels: dict[str, str], per_minute: float) -> dict[str, str]:
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{rendered}}}", "values": f"0+{per_minute}x40"}


def _histogram(metric: str, labels: dict[str, str], buckets: list[str], per_bin: list[float]) -> list[dict[str, str]]:
    series, cumulative = [], 0.0
    for le, count in zip(buckets, per_bin, strict=True):
        cumulative += count
        series.append(_series(f"{metric}_bucket", labels | {"le": le}, cumulative))
    series.append(_series(f"{metric}_count", labels, cumulative))
    return series


def _psi(canary: list[float], stable: list[float]) -> float:
    p = [count / sum(canary) for count in canary]
    q = [count / sum(stable) for count in stable]
    return sum((a - b) * math.log((a + 1e-4) / (b + 1e-4)) for a, b in zip(p, q, strict=True))


def _promql_round(value: float, to_nearest: float) -> float:
    """PromQL's round(v, to_nearest), operation for operation."""
    inverse = 1.0 / to_nearest
    return math.floor(value * inverse + 0.5) / inverse


def _synthetic_series() -> tuple[list[dict[str, str]], dict[str, float]]:
    """Series for canary and stable pods (plus noise the queries must ignore), and each metric's true value."""
    canary = {"namespace": NAMESPACE, "role": "canary", "endpoint": "/score"}
    stable = canary | {"role": "stable"}
    requests, latency, decisions = (
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds",
        "scoregate_decisions_total",
    )
    series = [
        _series(requests, canary | {"http_response_code": "200"}, 97),
        _series(requests, canary | {"http_response_code": "503"}, 3),
        # probes and scrapes are excluded; the stable side and another namespace are not the canary
        _series(requests, canary | {"endpoint": "/healthz", "http_response_code": "500"}, 50),
        _series(requests, stable | {"http_response_code": "500"}, 40),
        _series(requests, canary | {"namespace": "other", "http_response_code": "500"}, 40),
    ]
    latency_buckets = ["0.1", "0.25", "0.5", "+Inf"]
    series += _histogram(latency, canary, latency_buckets, [50.0, 40.0, 8.0, 2.0])
    series += _histogram(latency, stable, latency_buckets, [0.0, 0.0, 0.0, 100.0])
    canary_scores = [50.0, 10, 10, 8, 6, 5, 4, 3, 2, 2]
    stable_scores = [60.0, 12, 9, 6, 5, 3, 2, 1, 1, 1]
    scores = {"namespace": NAMESPACE}
    series += _histogram("scoregate_score", scores | {"role": "canary"}, SCORE_BUCKETS, canary_scores)
    series += _histogram("scoregate_score", scores | {"role": "stable"}, SCORE_BUCKETS, stable_scores)
    for role, approve, decline, rejected in (
        ("canary", 93, 3, 4),
        ("stable", 97, 2, 1),
    ):
        labels = {"namespace": NAMESPACE, "role": role}
        series.append(_series(decisions, labels | {"decision": "approve"}, approve))
        series.append(_series(decisions, labels | {"decision": "decline"}, decline))
        series.append(_series("scoregate_input_rejections_total", labels, rejected))
    expected = {
        "error-rate": 3 / 100,
        # histogram_quantile interpolates inside the bucket holding rank 95: (0.25, 0.5] holds ranks 90..98
        "p95-latency": 0.25 + (0.5 - 0.25) * (95 - 90) / (98 - 90),
        "score-psi": _psi(canary_scores, stable_scores),
        "decline-rate-ratio": (3 / 96) / (2 / 99),
        "input-rejection-rate": 4 / 100 - 1 / 100,
    }
    return series, expected


def test_queries_compute_their_metric_on_synthetic_series(
    rendered_documents: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install -y --no-install-recommends prometheus"
    # given synthetic canary/stable series with known true values, and the template's queries for that namespace
    series, expected = _synthetic_series()
    metrics = _metrics(rendered_documents["production"])
    queries = {name: metric["provider"]["prometheus"]["query"] for name, metric in metrics.items()}
    # promtool compares exactly; rounding both sides to 1e-9 (as PromQL's round() does it) absorbs the last-bit
    # differences between PromQL's order of float operations and this file's.
    tests = [
        {
            "expr": f"round(({queries[name].replace('{{args.namespace}}', NAMESPACE)}), 1e-9)",
            "eval_time": "30m",
            "exp_samples": [{"labels": "{}", "value": _promql_round(value, 1e-9)}],
        }
        for name, value in expected.items()
    ]
    spec = {
        "rule_files": [],
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "analysis_test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")

    # when promtool evaluates every query at t = 30 min
    completed = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then each query returns its true value, and the conditions judge them as intended
    assert completed.returncode == 0, completed.stdout + completed.stderr
    verdicts = {name: evaluate_condition(metrics[name]["successCondition"], value) for name, value in expected.items()}
    assert verdicts == {
        "error-rate": False,  # 3% 5xx is over the 1% budget
        "p95-latency": False,  # 406 ms is over 300 ms
        "score-psi": True,
        "decline-rate-ratio": True,
        "input-rejection-rate": False,  # 3 points more rejections than stable
    }
