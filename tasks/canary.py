"""`scoregate canary check`: run the canary AnalysisTemplate's own queries against Prometheus, by hand.

The AnalysisTemplate in `gitops/base/analysistemplate.yaml` is the one definition of a good canary; this module
parses it, substitutes the two template arguments, asks Prometheus's HTTP API, and judges each answer with the
metric's `successCondition` (comparisons of `result[0]` with numbers, joined by `&&`, parsed here, never eval'ed).
A Prometheus that does not answer, an empty answer or NaN is a failure: the check fails closed, never passes.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tasks.lineage import PROJECT_ROOT

__all__ = [
    "ANALYSIS_TEMPLATE",
    "CanaryMetric",
    "MetricVerdict",
    "check_canary",
    "condition_holds",
    "load_canary_metrics",
    "render_verdicts",
]

ANALYSIS_TEMPLATE = PROJECT_ROOT / "gitops" / "base" / "analysistemplate.yaml"
_COMPARISON = re.compile(r"^\s*result\[0\]\s*(<=|>=|<|>|==|!=)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class CanaryMetric:
    name: str
    query: str
    success_condition: str
    comparisons: tuple[tuple[str, float], ...]

    def passes(self, value: float) -> bool:
        return condition_holds(self.success_condition, value)


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    value: float | None
    condition: str
    passed: bool
    error: str | None = None


def _parse_condition(name: str, condition: str) -> tuple[tuple[str, float], ...]:
    parts = []
    for clause in condition.split("&&"):
        match = _COMPARISON.match(clause)
        if match is None:
            raise ValueError(f"metric {name}: cannot read successCondition clause {clause.strip()!r}")
        parts.append((match.group(1), float(match.group(2))))
    return tuple(parts)


def condition_holds(condition: str, value: float) -> bool:
    """Whether `value` satisfies a successCondition such as `result[0] >= 0.5 && result[0] <= 2.0` (NaN never does)."""
    comparisons = _parse_condition("(condition)", condition)
    return not math.isnan(value) and all(_OPERATORS[op](value, limit) for op, limit in comparisons)


def load_canary_metrics(template: Path = ANALYSIS_TEMPLATE, *, namespace: str) -> list[CanaryMetric]:
    document = yaml.safe_load(template.read_text(encoding="utf-8"))
    metrics = []
    for metric in document["spec"]["metrics"]:
        query = metric["provider"]["prometheus"]["query"].replace("{{args.namespace}}", namespace)
        if "{{" in query:
            raise ValueError(f"{template}: metric {metric['name']} uses a template argument this check cannot fill")
        condition = metric["successCondition"]
        metrics.append(
            CanaryMetric(
                name=metric["name"],
                query=query,
                success_condition=condition,
                comparisons=_parse_condition(metric["name"], condition),
            )
        )
    return metrics


def _query(client: httpx.Client, prometheus: str, query: str) -> float:
    response = client.get(f"{prometheus.rstrip('/')}/api/v1/query", params={"query": query})
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "error":
        # Prometheus answers a query it cannot run with a 4xx/5xx and says why in the body: show that, not the status.
        raise ValueError(f"Prometheus refused the query ({response.status_code}): {body.get('error', '')}")
    response.raise_for_status()
    if not isinstance(body, dict):
        raise ValueError(f"{response.url} did not answer with Prometheus's JSON")
    if body.get("status") != "success":
        raise ValueError(f"Prometheus answered {body.get('status')}: {body.get('error', '')}")
    result = body["data"]["result"]
    if not result:
        raise ValueError("no data (the metric is not scraped, or nothing was scored)")
    return float(result[0]["value"][1])


def check_canary(prometheus: str, metrics: list[CanaryMetric], *, timeout_seconds: float = 10.0) -> list[MetricVerdict]:
    verdicts = []
    with httpx.Client(timeout=timeout_seconds) as client:
        for metric in metrics:
            try:
                value = _query(client, prometheus, metric.query)
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
                verdicts.append(
                    MetricVerdict(metric.name, None, metric.success_condition, passed=False, error=str(error))
                )
                continue
            verdicts.append(MetricVerdict(metric.name, value, metric.success_condition, passed=metric.passes(value)))
    return verdicts


def render_verdicts(verdicts: list[MetricVerdict]) -> str:
    lines = []
    for verdict in verdicts:
        status = "PASS" if verdict.passed else "FAIL"
        shown = "-" if verdict.value is None else f"{verdict.value:.4g}"
        detail = f"  ({verdict.error})" if verdict.error else ""
        lines.append(f"{status}  {verdict.metric:<22} {shown:>10}  limit: {verdict.condition}{detail}")
    failed = [v.metric for v in verdicts if not v.passed]
    lines.append(f"canary {'FAILED on ' + ', '.join(failed) if failed else 'passed'}")
    return "\n".join(lines)
