"""The scorer's Prometheus metrics, kept as plain counters and rendered at scrape time.

Names and labels are what `gitops/base/analysistemplate.yaml` and `prometheusrule.yaml` query:
- `bentoml_service_request_total` / `bentoml_service_request_duration_seconds` (labels `endpoint`,
  `http_response_code`, `service_name`, `service_version`): BentoML's own HTTP metric names and labels. BentoML's
  metrics middleware is switched off (it costs a few multiprocess file writes per request) and these are kept here.
- `scoregate_score` histogram, buckets 0.01 0.02 0.05 0.1 0.2 0.3 0.5 0.7 0.9 (+Inf), one observation per scored row.
- `scoregate_decisions_total{decision="decline"|"approve"}`, one per scored row.
- `scoregate_input_rejections_total{field=...}`, one per refused row, labelled with its first failing field;
  a request refused as a whole (malformed JSON, wrong content type, too large, empty) counts one row, field "(body)".
- `scoregate_feature_value{feature=...}`, a histogram of every model input (design column) for skew checks;
  standardised inputs are z-scores and dummies 0/1, so one set of buckets serves all.
- `scoregate_model_info` (value 1) carries the model name, feature-spec hash and threshold version.
Every series carries `model_version`. The `role` label is NOT set here: Prometheus adds it when scraping.

Counters are plain Python numbers updated on the server's event loop (one thread), so no locks; one process per
replica (the scorer runs one worker) means no multiprocess aggregation either.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "FEATURE_BUCKETS",
    "SCORE_BUCKETS",
    "ScorerMetrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCORE_BUCKETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
FEATURE_BUCKETS: tuple[float, ...] = (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
_FOLD_ROWS = 4096


class _Histogram:
    """Per-label-set bucket counts (non-cumulative; +Inf last) and sums."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)  # buckets..., +Inf, sum
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self, name: str, documentation: str, labels: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=list(labels))
        edges = [*(_le(b) for b in self.bounds), "+Inf"]
        for key, counts in sorted(self.series.items()):
            cumulative, running = [], 0.0
            for edge, count in zip(edges, counts[:-1], strict=True):
                running += count
                cumulative.append((edge, running))
            family.add_metric(list(key), cumulative, sum_value=counts[-1])
            if self.bounds[0] < 0:
                # prometheus_client leaves out _count and _sum when buckets go below zero (a sum of negative values
                # is no counter); the count still is one, and rate() over it is what a skew query divides by.
                named = dict(zip(labels, key, strict=True))
                family.samples.append(Sample(f"{name}_count", named, running, None))
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


class ScorerMetrics(Collector):
    """Everything `/metrics` shows; the scorer calls the `observe_*` / `reject` methods on its event loop."""

    def __init__(
        self,
        *,
        model_name: str,
        model_version: str,
        feature_spec_hash: str,
        threshold_version: str,
        design_columns: Sequence[str],
        rejection_fields: Sequence[str] = (),
        service_name: str = "scoregate-scorer",
        service_version: str = "not available",
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.feature_spec_hash = feature_spec_hash
        self.threshold_version = threshold_version
        self.design_columns = list(design_columns)
        self.service_name = service_name
        self.service_version = service_version
        self._requests: dict[tuple[str, str], int] = {}
        self._durations = _Histogram(DURATION_BUCKETS)
        self._scores = _Histogram(SCORE_BUCKETS)
        self._decisions = {"decline": 0, "approve": 0}
        # Like the score series, every rejection series exists from start-up at zero, so the first refusals of a
        # field count in Prometheus' increase() and the canary's input-rejection rate does not under-read.
        self._rejections: dict[str, int] = dict.fromkeys(rejection_fields, 0)
        self._feature_counts = np.zeros((len(self.design_columns), len(FEATURE_BUCKETS) + 1), dtype=np.int64)
        self._feature_sums = np.zeros(len(self.design_columns), dtype=np.float64)
        self._pending_rows: list[Sequence[float]] = []
        self._version_key = (model_version,)
        # The score series exist from start-up, at zero: Prometheus' increase() counts nothing for a series' first
        # sample, so a histogram that appeared only with the first score would lose the scores of its first scrape.
        self._scores.series[self._version_key] = [0.0] * (len(SCORE_BUCKETS) + 2)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    # -- observations

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, str(status))
        self._requests[key] = self._requests.get(key, 0) + 1
        self._durations.observe(key, seconds)

    def observe_score(self, score: float, decline: bool) -> None:
        self._scores.observe(self._version_key, score)
        self._decisions["decline" if decline else "approve"] += 1

    def observe_design(self, row: Sequence[float]) -> None:
        # Rows are binned in bulk (one numpy pass per few thousand rows, or at scrape time): binning 20-odd values
        # one by one in Python would cost more than scoring the row.
        self._pending_rows.append(row)
        if len(self._pending_rows) >= _FOLD_ROWS:
            self._fold_pending()

    def _fold_pending(self) -> None:
        if not self._pending_rows:
            return
        rows = np.asarray(self._pending_rows, dtype=np.float64)
        self._pending_rows = []
        # side="left" is bisect_left: a value equal to a bound falls in that bound's bucket (Prometheus' `le`).
        buckets = np.searchsorted(np.asarray(FEATURE_BUCKETS), rows, side="left")
        width = len(FEATURE_BUCKETS) + 1
        for column in range(rows.shape[1]):
            self._feature_counts[column] += np.bincount(buckets[:, column], minlength=width)
        self._feature_sums += rows.sum(axis=0)

    def reject(self, field: str, rows: int = 1) -> None:
        self._rejections[field] = self._rejections.get(field, 0) + rows

    # -- rendering

    def render(self) -> bytes:
        return generate_latest(self._registry)

    def collect(self) -> Iterable[Metric]:
        version = self.model_version
        http_labels = ["endpoint", "http_response_code", "service_name", "service_version", "model_version"]
        service = (self.service_name, self.service_version, version)
        requests = CounterMetricFamily("bentoml_service_request", "Total number of HTTP requests", labels=http_labels)
        for (endpoint, status), count in sorted(self._requests.items()):
            requests.add_metric([endpoint, status, *service], count)
        yield requests
        durations = _Histogram(DURATION_BUCKETS)
        durations.series = {key + service: counts for key, counts in self._durations.series.items()}
        yield durations.family(
            "bentoml_service_request_duration_seconds", "API HTTP request duration in seconds", http_labels
        )
        yield self._scores.family("scoregate_score", "Scores of scored rows", ["model_version"])
        decisions = CounterMetricFamily(
            "scoregate_decisions", "Scored rows by decision", labels=["decision", "model_version"]
        )
        for decision, count in sorted(self._decisions.items()):
            decisions.add_metric([decision, version], count)
        yield decisions
        rejections = CounterMetricFamily(
            "scoregate_input_rejections",
            "Rows refused by input validation, by their first failing field",
            labels=["field", "model_version"],
        )
        for field, count in sorted(self._rejections.items()):
            rejections.add_metric([field, version], count)
        yield rejections
        self._fold_pending()
        features = _Histogram(FEATURE_BUCKETS)
        for name, counts, total in zip(self.design_columns, self._feature_counts, self._feature_sums, strict=True):
            features.series[(name, version)] = [float(c) for c in counts] + [float(total)]
        yield features.family("scoregate_feature_value", "Model inputs (design columns)", ["feature", "model_version"])
        info = GaugeMetricFamily(
            "scoregate_model_info",
            "The served model",
            labels=["model_name", "model_version", "feature_spec_hash", "threshold_version"],
        )
        info.add_metric([self.model_name, version, self.feature_spec_hash, self.threshold_version], 1.0)
        yield info
