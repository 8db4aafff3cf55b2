"""`scoregate canary check` against a real Prometheus scraping real scorer processes.

Three canaries run side by side, each under its own `namespace` label next to the same stable scorer (Prometheus
scrapes the stable once per namespace, as each namespace would run its own stable pods), so the three verdicts come
from one round of traffic instead of three:
- healthy: a model retrained on other generated data, same features and schema;
- shifted: that model with its intercept moved up by 2 (every score moves, as when a feature is served differently
  from how it was trained);
- rejecting: that model with a raw schema that no longer allows the `atm` channel the stable accepts.
The committed AnalysisTemplate's queries run unchanged: their 5- and 10-minute windows hold all of this module's
traffic, and Prometheus scrapes every second, so a few seconds of traffic are enough to judge.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tasks.canary import CanaryMetric, MetricVerdict, check_canary, load_canary_metrics, render_verdicts
from tasks.features import feature_spec_hash
from tasks.generator import generate_transactions
from tasks.model import ScoringModel
from tasks.sample_bento import train_sample_model
from tests.prometheus_server import PrometheusServer, ScrapeTarget, Series, prometheus_server
from tests.servers import child_environment, free_port, stop_process

PROJECT_ROOT = Path(__file__).resolve().parents[2]
METRICS = ("error-rate", "p95-latency", "score-psi", "decline-rate-ratio", "input-rejection-rate")
SCENARIOS = ("healthy", "shifted", "rejecting")
NAMESPACE = {scenario: f"scoregate-canary-{scenario}" for scenario in SCENARIOS}
STABLE_VERSION, CANARY_VERSION = "1", "2"
INTERCEPT_SHIFT = 2.0
NARROWED_CHANNELS = ["online", "pos"]
TRAFFIC_ROWS, TRAFFIC_SEED = 2400, 31
START_TIMEOUT_S = 120.0
SCRAPE_TIMEOUT_S = 30.0
# A selector in a query: a metric name followed by its label matchers.
SELECTOR = re.compile(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


@dataclass
class Scorer:
    """A `bentoml serve bentos.service:Scorer` process started from the repository root."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def write_model_dir(folder: Path, model: ScoringModel, manifest: Mapping[str, Any]) -> Path:
    """The folder SCOREGATE_MODEL_DIR names: the model file and a manifest recording its digest."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = model.save(folder / "scoring_model.json")
    recorded = {**manifest, "scoring_model_sha256": digest, "feature_spec_hash": model.pipeline.spec_hash}
    (folder / "manifest.json").write_text(json.dumps(recorded), encoding="utf-8")
    return folder


def with_allowed_channels(model: ScoringModel, channels: list[str]) -> ScoringModel:
    """The same model whose raw schema allows only `channels` (its spec hash recomputed, as a retrain would)."""
    spec = model.pipeline.spec
    columns = dict(spec.columns)
    columns["channel"] = columns["channel"].model_copy(update={"allowed": channels})
    narrowed = spec.model_copy(update={"columns": columns})
    pipeline = model.pipeline.model_copy(update={"spec": narrowed, "spec_hash": feature_spec_hash(narrowed)})
    return model.model_copy(update={"pipeline": pipeline})


def start_scorer(name: str, model_dir: Path, workdir: Path) -> Scorer:
    port = free_port()
    log = workdir / f"scorer-{name}-{port}.log"
    env = child_environment(
        {
            "SCOREGATE_MODEL_DIR": str(model_dir),
            "SCOREGATE_PREDICTION_LOG": "off",
            "SCOREGATE_HOME": str(workdir / "home"),
            "BENTOML_HOME": str(workdir / "bentoml"),
        }
    )
    command = [
        str(Path(sys.executable).with_name("bentoml")),
        "serve",
        "bentos.service:Scorer",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Scorer(name, port, process, log)


def stop_all(scorers: Mapping[str, Scorer]) -> None:
    """Signal every scorer's process group first, then wait for each: they shut down side by side."""
    for scorer in scorers.values():
        if scorer.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(scorer.process.pid, signal.SIGTERM)
    for scorer in scorers.values():
        stop_process(scorer.process)


def _ready(scorer: Scorer) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", scorer.port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def wait_until_ready(scorers: Sequence[Scorer], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(scorers)
    while waiting:
        for scorer in waiting:
            if scorer.process.poll() is not None:
                raise AssertionError(f"scorer {scorer.name} exited:\n{scorer.log_tail()}")
        waiting = [scorer for scorer in waiting if not _ready(scorer)]
        if waiting and time.monotonic() > deadline:
            raise AssertionError(
                f"scorer {waiting[0].name} not ready after {timeout_s:.0f} s:\n{waiting[0].log_tail()}"
            )
        if waiting:
            time.sleep(0.2)


def send(scorer: Scorer, records: Sequence[Mapping[str, Any]]) -> Counter[int]:
    """POST each record on its own (one card authorisation per request) and count the answers by status."""
    statuses: Counter[int] = Counter()
    connection = http.client.HTTPConnection("127.0.0.1", scorer.port, timeout=30)
    try:
        for record in records:
            connection.request("POST", "/score", json.dumps(record), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses[response.status] += 1
    finally:
        connection.close()
    return statuses


def traffic_records() -> list[dict[str, Any]]:
    """Generated transactions in time order, as clients send them: no target, timestamps as ISO strings."""
    frame = generate_transactions(TRAFFIC_ROWS, seed=TRAFFIC_SEED).sort("timestamp").drop("is_fraud")
    return frame.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.f")).to_dicts()


def primers(record: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """A valid transaction and one every schema refuses on its channel, each on a card of its own.

    Scored before the traffic, they make every series the queries read exist, and be scraped, before the traffic
    starts: a counter first seen mid-traffic loses from rate() what it counted before its first scrape. The scorer
    opens one rejection series per refused field, at that field's first refusal, so the refused primer fails on the
    field the narrowed canary refuses the traffic on.
    """
    valid = {**record, "transaction_id": f"primer-{name}", "card_id": f"primer-card-{name}", "channel": "pos"}
    refused = {**valid, "transaction_id": f"primer-refused-{name}", "channel": "carrier-pigeon"}
    return [valid, refused]


def latest_by_role(series: Series) -> dict[tuple[str, str], float]:
    return {(item["metric"]["namespace"], item["metric"]["role"]): float(item["value"][1]) for item in series}


@dataclass(frozen=True)
class LiveCanaries:
    prometheus: PrometheusServer
    scorers: dict[str, Scorer]
    statuses: dict[str, Counter[int]]
    canary_records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCanaries]:
    workdir = tmp_path_factory.mktemp("canary-live")
    stable = train_sample_model(workdir / "train-stable", rows=10_000, seed=7, model_version=STABLE_VERSION)
    canary = train_sample_model(workdir / "train-canary", rows=10_000, seed=8, model_version=CANARY_VERSION)
    shifted = canary.model.model_copy(update={"intercept": canary.model.intercept + INTERCEPT_SHIFT})
    model_dirs = {
        "stable": write_model_dir(workdir / "stable", stable.model, stable.manifest),
        "healthy": write_model_dir(workdir / "healthy", canary.model, canary.manifest),
        "shifted": write_model_dir(workdir / "shifted", shifted, canary.manifest),
        "rejecting": write_model_dir(
            workdir / "rejecting", with_allowed_channels(canary.model, NARROWED_CHANNELS), canary.manifest
        ),
    }
    records = traffic_records()
    # Every other transaction to the stable and to the canaries: a 50/50 split of one stream.
    stable_records, canary_records = records[0::2], records[1::2]
    with contextlib.ExitStack() as stack:
        scorers: dict[str, Scorer] = {}
        stack.callback(stop_all, scorers)
        for name, model_dir in model_dirs.items():
            scorers[name] = start_scorer(name, model_dir, workdir)
        targets = [
            target
            for scenario in SCENARIOS
            for target in (
                ScrapeTarget(
                    scorers["stable"].address,
                    {"namespace": NAMESPACE[scenario], "role": "stable", "model_version": STABLE_VERSION},
                ),
                ScrapeTarget(
                    scorers[scenario].address,
                    {"namespace": NAMESPACE[scenario], "role": "canary", "model_version": CANARY_VERSION},
                ),
            )
        ]
        prometheus = stack.enter_context(prometheus_server(workdir / "prometheus", targets))
        wait_until_ready(list(scorers.values()))

        # given every target scraped after one scored and one refused row, so all of the traffic lies in the windows
        for name, scorer in scorers.items():
            assert send(scorer, primers(records[0], name)) == {200: 1, 422: 1}, scorer.log_tail()
        for series in ("scoregate_score_count", "scoregate_input_rejections_total"):
            prometheus.wait_for(
                f"count by (namespace, role) ({series})",
                lambda answer: len(answer) == 2 * len(SCENARIOS),
                f"{series} from every scorer (does the scorer export the name the template queries?)",
                SCRAPE_TIMEOUT_S,
            )

        # when the stable and the three canaries take their halves of the stream at the same time
        streams = {"stable": stable_records, **{scenario: canary_records for scenario in SCENARIOS}}
        with ThreadPoolExecutor(max_workers=len(streams)) as pool:
            futures = {name: pool.submit(send, scorers[name], stream) for name, stream in streams.items()}
            statuses = {name: future.result() for name, future in futures.items()}

        # then Prometheus has scraped every scored and every refused row before the check runs
        for series, status, what in (
            ("scoregate_decisions_total", 200, "scored"),
            ("scoregate_input_rejections_total", 422, "refused"),
        ):
            expected = {
                (NAMESPACE[scenario], role): statuses[name][status] + 1
                for scenario in SCENARIOS
                for role, name in (("stable", "stable"), ("canary", scenario))
            }
            prometheus.wait_for(
                f"sum by (namespace, role) ({series})",
                lambda answer, expected=expected: latest_by_role(answer) == expected,
                f"every {what} row ({expected})",
                SCRAPE_TIMEOUT_S,
            )
        yield LiveCanaries(prometheus, scorers, statuses, canary_records)


def verdicts_for(live: LiveCanaries, scenario: str) -> dict[str, MetricVerdict]:
    verdicts = check_canary(live.prometheus.url, load_canary_metrics(namespace=NAMESPACE[scenario]))
    return {verdict.metric: verdict for verdict in verdicts}


def run_cli(*argv: str) -> tuple[int, str]:
    from flows.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def check_namespace(live: LiveCanaries, scenario: str) -> tuple[int, str]:
    """`scoregate canary check` for production, on the namespace of one scenario's canary."""
    url = live.prometheus.url
    return run_cli("canary", "check", "--prometheus", url, "--env", "production", "--namespace", NAMESPACE[scenario])


def test_scorers_export_every_series_and_label_the_template_queries(live: LiveCanaries) -> None:
    # given the selectors of every template query (metric name and the labels it matches on)
    wanted: dict[str, set[str]] = {}
    for metric in load_canary_metrics(namespace=NAMESPACE["rejecting"]):
        for name, matchers in SELECTOR.findall(metric.query):
            wanted.setdefault(name, set()).update(MATCHER_LABEL.findall(matchers))

    # when Prometheus is asked which labels the scraped series of each name carry
    carried = {
        name: {
            label
            for item in live.prometheus.query(f'{name}{{namespace="{NAMESPACE["rejecting"]}"}}')
            for label in item["metric"]
        }
        for name in wanted
    }

    # then every name the template queries is scraped from the scorers, with every label it selects on
    missing = {name: sorted(labels - carried[name]) for name, labels in wanted.items() if not labels <= carried[name]}
    exported = sorted(
        item["metric"]["__name__"] for item in live.prometheus.query('group by (__name__) ({job="scoregate-scorer"})')
    )
    assert not missing, (
        f"the AnalysisTemplate queries series or labels the scorer does not export: {missing}; exported: {exported}"
    )
    assert set(wanted) >= {"bentoml_service_request_total", "scoregate_score_bucket", "scoregate_decisions_total"}


def test_healthy_canary_passes_and_every_metric_is_shown_with_its_value(live: LiveCanaries) -> None:
    # given a canary retrained on other data, taking half of the same traffic as the stable
    assert live.statuses["healthy"] == {200: len(live.canary_records)}

    # when the check runs the template's queries for its namespace
    verdicts = verdicts_for(live, "healthy")
    code, output = check_namespace(live, "healthy")

    # then every metric has a finite value within its limit, and the command says so and exits 0
    assert tuple(verdicts) == METRICS
    report = render_verdicts(list(verdicts.values()))
    for verdict in verdicts.values():
        assert verdict.error is None and verdict.value is not None and math.isfinite(verdict.value), report
        assert verdict.passed, report
    # sums of rates that are all zero: PromQL arithmetic can leave ~1e-19
    assert verdicts["error-rate"].value == pytest.approx(0.0, abs=1e-12)
    assert verdicts["input-rejection-rate"].value == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < (verdicts["p95-latency"].value or 0.0) <= 0.3
    assert code == 0, output
    lines = output.splitlines()
    for name in METRICS:
        assert any(line.startswith("PASS") and f" {name} " in line for line in lines), output
    assert lines[-1] == "canary passed"


def test_canary_whose_scores_moved_fails_on_score_shift_and_decline_rate(live: LiveCanaries) -> None:
    # given a canary whose intercept is 2 higher than the model it was trained as, on the same traffic
    assert live.statuses["shifted"] == {200: len(live.canary_records)}

    # when the command checks its namespace
    code, output = check_namespace(live, "shifted")
    verdicts = verdicts_for(live, "shifted")

    # then it exits non-zero naming the score-distribution and decline-rate metrics, each with the value that broke it,
    # while the HTTP and input checks (which the shift does not touch) still pass
    report = render_verdicts(list(verdicts.values()))
    failed = {name for name, verdict in verdicts.items() if not verdict.passed}
    assert failed == {"score-psi", "decline-rate-ratio"}, report
    assert (verdicts["score-psi"].value or 0.0) > 0.25, report
    assert (verdicts["decline-rate-ratio"].value or 0.0) > 2.0, report
    assert code == 4, output
    assert output.splitlines()[-1] == "canary FAILED on score-psi, decline-rate-ratio"
    psi_line = next(line for line in output.splitlines() if " score-psi " in line)
    assert psi_line.startswith("FAIL") and "limit: result[0] <= 0.25" in psi_line


def test_canary_that_refuses_inputs_the_stable_accepts_fails_on_input_rejection(live: LiveCanaries) -> None:
    # given a canary whose schema no longer allows the atm channel, taking the same traffic as the stable
    atm = sum(record["channel"] == "atm" for record in live.canary_records)
    assert atm > 0
    assert live.statuses["rejecting"] == {200: len(live.canary_records) - atm, 422: atm}

    # when the check runs for its namespace
    verdicts = verdicts_for(live, "rejecting")

    # then it fails on the input-rejection metric, whose value is the canary's share of refused rows (the stable
    # refuses none); refusals are 4xx, so the error-rate check does not count them
    report = render_verdicts(list(verdicts.values()))
    rejection = verdicts["input-rejection-rate"]
    assert not rejection.passed and rejection.error is None, report
    assert rejection.value == pytest.approx(atm / len(live.canary_records), abs=0.005), report
    assert verdicts["error-rate"].passed, report
    assert "canary FAILED on" in report and "input-rejection-rate" in report.splitlines()[-1]


def test_namespace_nothing_scrapes_fails_every_metric(live: LiveCanaries) -> None:
    # given a namespace no scorer runs in
    metrics = load_canary_metrics(namespace="scoregate-nowhere")

    # when the check runs
    verdicts = check_canary(live.prometheus.url, metrics)

    # then no metric passes: an empty answer is an error, never a pass
    assert [verdict.metric for verdict in verdicts] == list(METRICS)
    for verdict in verdicts:
        assert not verdict.passed and verdict.value is None, verdict
        assert verdict.error is not None and "no data" in verdict.error


def test_query_prometheus_cannot_run_fails_with_its_reason(live: LiveCanaries) -> None:
    # given a metric whose query does not parse (as a hand-edited template might)
    broken = CanaryMetric("broken", "sum(rate(scoregate_decisions_total[5m])", "result[0] <= 1", (("<=", 1.0),))

    # when the check runs it
    (verdict,) = check_canary(live.prometheus.url, [broken])

    # then it fails, and the message is Prometheus's reason rather than a bare HTTP status
    assert not verdict.passed and verdict.value is None
    assert verdict.error is not None and "Prometheus refused the query (400)" in verdict.error
    assert "parse error" in verdict.error


def test_url_that_is_not_prometheus_fails_every_metric(live: LiveCanaries) -> None:
    # given the address of a scorer instead of Prometheus (it answers, but 404 to the query API)
    url = f"http://{live.scorers['stable'].address}"

    # when the check runs
    verdicts = check_canary(url, load_canary_metrics(namespace=NAMESPACE["healthy"]))

    # then every metric fails with the HTTP error
    assert all(not verdict.passed and verdict.error and "404" in verdict.error for verdict in verdicts), verdicts


def test_prometheus_that_refuses_connections_fails_the_check() -> None:
    # given a port nothing listens on
    url = f"http://127.0.0.1:{free_port()}"

    # when the command checks against it
    code, output = run_cli("canary", "check", "--prometheus", url, "--env", "staging")

    # then it exits non-zero and names every metric as failed
    assert code == 4, output
    assert output.splitlines()[-1] == f"canary FAILED on {', '.join(METRICS)}"
    assert all(line.startswith("FAIL") for line in output.splitlines()[:-1]), output


def test_prometheus_that_never_answers_fails_the_check() -> None:
    # given a socket that accepts connections and never replies
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"

        # when the check runs with a short timeout
        verdicts = check_canary(url, load_canary_metrics(namespace=NAMESPACE["healthy"]), timeout_seconds=0.2)

    # then every metric fails with the timeout instead of waiting for an answer
    assert [verdict.metric for verdict in verdicts] == list(METRICS)
    assert all(not verdict.passed and verdict.value is None for verdict in verdicts)
    assert all(verdict.error is not None and "timed out" in verdict.error for verdict in verdicts), verdicts
