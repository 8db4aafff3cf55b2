"""/metrics against what the GitOps monitoring queries: the canary analysis and the alerts read the scorer's series.

The metric names, label names and label values are parsed out of the AnalysisTemplate's and the PrometheusRule's
PromQL, not copied here, so a query that starts asking for a series the scorer does not export fails this test.
Then a real Prometheus scrapes the served bento as both the canary and the stable of one namespace (the labels the
ServiceMonitor adds in the cluster), and the AnalysisTemplate's own queries, run by `scoregate canary check`'s code,
must all answer and pass: the same bento on both sides is the one canary that cannot differ from its stable.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tasks.canary import ANALYSIS_TEMPLATE, check_canary, load_canary_metrics
from tasks.lineage import PROJECT_ROOT
from tests.bentos.conftest import Server, transaction
from tests.prometheus_server import ScrapeTarget, prometheus_server

PROMETHEUS_RULE = PROJECT_ROOT / "gitops" / "base" / "prometheusrule.yaml"
# Labels the ServiceMonitor's relabelling (namespace, role, model_version) and Prometheus itself (job) attach.
SCRAPE_LABELS = frozenset({"namespace", "role", "job", "model_version"})
# Series Prometheus makes about its targets, not read from the scorer.
PROMETHEUS_SERIES = frozenset({"up"})
NAMESPACE = "scoregate-metrics-test"

_TEMPLATE_ARGUMENT = re.compile(r"\{\{[^{}]*\}\}")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^{}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


@dataclass
class Wanted:
    """What the queries ask of one metric: the label names they match on, and the exact values they select."""

    labels: set[str] = field(default_factory=set)
    values: set[tuple[str, str]] = field(default_factory=set)


def queries() -> list[str]:
    template = yaml.safe_load(ANALYSIS_TEMPLATE.read_text(encoding="utf-8"))
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    found = [metric["provider"]["prometheus"]["query"] for metric in template["spec"]["metrics"]]
    found += [item["expr"] for group in rule["spec"]["groups"] for item in group["rules"]]
    return [_TEMPLATE_ARGUMENT.sub("x", query) for query in found]


def wanted_series(texts: list[str]) -> dict[str, Wanted]:
    wanted: dict[str, Wanted] = defaultdict(Wanted)
    for text in texts:
        for name, matchers in _SELECTOR.findall(text):
            if name in PROMETHEUS_SERIES:
                continue
            wants = wanted[name]
            for label, operator, value in _MATCHER.findall(matchers):
                if label in SCRAPE_LABELS:
                    continue
                wants.labels.add(label)
                if operator == "=":
                    wants.values.add((label, value))
    return dict(wanted)


def exported_samples(text: str) -> dict[str, list[dict[str, str]]]:
    samples: dict[str, list[dict[str, str]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append(dict(sample.labels))
    return dict(samples)


def decisions_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "scoregate_decisions_total"
    )


def send_traffic(server: Server) -> dict[str, int]:
    """Valid rows of every kind (some declined, some approved) and one refused row; returns the outcomes."""
    rows = [
        # every risk the sample model learned at once: a night-time online electronics purchase abroad, new device
        transaction(
            timestamp="2026-03-01T03:00:00",
            merchant_category="electronics",
            channel="online",
            device_seen_before=False,
            merchant_country="US",
        ),
        *(transaction(amount=float(10 + index)) for index in range(30)),
    ]
    scored = server.post(rows)
    refused = server.post(transaction(amount=-1.0))
    assert scored.status_code == 200 and refused.status_code == 422
    decisions = [result["decision"] for result in scored.json()]
    return {"declined": decisions.count("decline"), "approved": decisions.count("approve")}


def test_the_queries_parse_into_the_metrics_the_design_names() -> None:
    # given the monitoring manifests' PromQL
    # when the selectors are read out of it
    wanted = wanted_series(queries())
    # then they are the scorer's metrics (a parser that found nothing would make the next test pass vacuously)
    assert set(wanted) == {
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
        "scoregate_score_bucket",
        "scoregate_score_count",
        "scoregate_score_sum",
        "scoregate_decisions_total",
        "scoregate_input_rejections_total",
    }
    assert wanted["scoregate_decisions_total"].values == {("decision", "decline")}
    assert ("le", "0.01") in wanted["scoregate_score_bucket"].values


def test_metrics_exports_every_series_label_and_value_the_monitoring_queries_read(served: Server) -> None:
    # given a served bento that has scored and refused rows
    outcome = send_traffic(served)
    assert outcome["declined"] >= 1 and outcome["approved"] >= 1
    # when /metrics is scraped
    response = served.get("/metrics")
    assert response.status_code == 200
    exported = exported_samples(response.text)
    # then every metric a query names is there, with every label it matches on and every exact value it selects
    for name, wants in wanted_series(queries()).items():
        assert name in exported, f"{name} is queried by gitops/base but not exported"
        label_sets = exported[name]
        for label in wants.labels:
            assert any(label in labels for labels in label_sets), f"{name} has no label {label}"
        for label, value in wants.values:
            assert any(labels.get(label) == value for labels in label_sets), f"{name} has no {label}={value!r}"
        # and every series says which model version it describes, so stable and canary can be told apart
        assert all(labels.get("model_version") for labels in label_sets), name


def test_the_canary_analysis_passes_on_a_real_prometheus_scraping_the_bento(served: Server, tmp_path: Path) -> None:
    # given the served bento with some traffic already, so every series exists before the first scrape
    send_traffic(served)
    address = served.url.removeprefix("http://")
    targets = [ScrapeTarget(address, {"namespace": NAMESPACE, "role": role}) for role in ("canary", "stable")]
    with prometheus_server(tmp_path / "prometheus", targets) as prometheus:
        prometheus.wait_for(
            f'up{{namespace="{NAMESPACE}"}} == 1', lambda series: len(series) == 2, "both targets up", timeout_s=30
        )
        # when more rows are scored and both roles have scraped all of them
        send_traffic(served)
        decided = decisions_total(served.get("/metrics").text)
        prometheus.wait_for(
            f'sum by (role) (scoregate_decisions_total{{namespace="{NAMESPACE}"}}) == {decided}',
            lambda series: len(series) == 2,
            "the last rows scraped by both roles",
            timeout_s=30,
        )
        verdicts = check_canary(prometheus.url, load_canary_metrics(namespace=NAMESPACE))
    # then every metric of the AnalysisTemplate answers and passes: no 5xx, a quick p95, no score shift, the same
    # decline rate and the same rejection share on both sides
    by_name = {verdict.metric: verdict for verdict in verdicts}
    assert all(verdict.passed for verdict in verdicts), [v for v in verdicts if not v.passed]
    assert by_name["error-rate"].value == 0.0
    assert by_name["p95-latency"].value is not None and 0.0 < by_name["p95-latency"].value <= 0.3
    assert by_name["score-psi"].value is not None and abs(by_name["score-psi"].value) < 1e-9
    assert by_name["decline-rate-ratio"].value is not None and abs(by_name["decline-rate-ratio"].value - 1.0) < 1e-9
    assert by_name["input-rejection-rate"].value is not None and abs(by_name["input-rejection-rate"].value) < 1e-9
