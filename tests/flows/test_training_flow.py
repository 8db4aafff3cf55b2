"""End to end on the real parts: Prefect's local API, an MLflow SQLite store, `bentoml build` and `bentoml serve`."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from tasks.model import ScoringModel
from tasks.settings import Settings
from tests.flows.conftest import PROJECT_ROOT, TRAINED_ROWS, small_default_config

ROWS = TRAINED_ROWS


def test_flow_registers_a_version_with_its_metrics_and_lineage(trained: tuple[dict[str, Any], Settings]) -> None:
    # given a finished training flow
    summary, settings = trained
    from tasks.registry import mlflow_client

    client = mlflow_client(settings)
    # when the registry is asked for the version it reported
    version = client.get_model_version(summary["model_name"], summary["model_version"])
    run = client.get_run(summary["run_id"])
    # then the version exists, points at the run, and carries the lineage
    assert version.run_id == summary["run_id"]
    data_file = settings.data_dir / f"generated-{ROWS}-seed7.parquet"
    assert version.tags["scoregate.data_hash"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert version.tags["scoregate.data_hash"] == summary["data_hash"]
    assert version.tags["scoregate.feature_spec_hash"] == summary["feature_spec_hash"]
    assert version.tags["scoregate.lock_hash"] == hashlib.sha256((PROJECT_ROOT / "uv.lock").read_bytes()).hexdigest()
    assert version.tags["scoregate.git_commit"] != ""
    assert version.tags["scoregate.bento_tag"] == summary["bento_tag"]
    assert version.tags["scoregate.bento_digest"] == summary["bento_digest"]
    assert version.tags["scoregate.version.polars"] == pl.__version__
    # and the run's metrics are the summary's, with their intervals
    roc = summary["metrics"]["roc_auc"]
    assert run.data.metrics["test_roc_auc"] == pytest.approx(roc["value"])
    assert run.data.metrics["test_roc_auc_ci_low"] <= roc["value"] <= run.data.metrics["test_roc_auc_ci_high"]
    assert roc["value"] > 0.6  # the generator's fraud mechanism is learnable
    # and the rows add up
    rows = summary["rows"]
    assert rows["read"] == ROWS and rows["rejected"] == 0
    assert rows["train"] + rows["valid"] + rows["test"] == ROWS


def test_run_holds_the_reports_a_reviewer_reads(trained: tuple[dict[str, Any], Settings]) -> None:
    summary, settings = trained
    from tasks.registry import mlflow_client

    client = mlflow_client(settings)
    names = {item.path for item in client.list_artifacts(summary["run_id"])}
    plots = {item.path for item in client.list_artifacts(summary["run_id"], "plots")}
    assert {"evaluation_report.json", "model_card.md", "feature_pipeline.json", "feature_spec.json"} <= names
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png"} <= plots
    card = Path(summary["reports_dir"], "model_card.md").read_text(encoding="utf-8")
    assert "| amount |" in card and "odds ratio" in card


def test_summary_coefficients_are_readable(trained: tuple[dict[str, Any], Settings]) -> None:
    summary, _ = trained
    features = [row["feature"] for row in summary["coefficients"]]
    assert features[0] == "(intercept)"
    assert "amount" in features and "channel[online]" in features
    for row in summary["coefficients"]:
        assert row["odds_ratio"] == pytest.approx(np.exp(row["raw"]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: object) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_served_bento_scores_exactly_like_the_batch_path(trained: tuple[dict[str, Any], Settings]) -> None:
    # given the bento the flow built, served by `bentoml serve` on 127.0.0.1
    summary, settings = trained
    port = _free_port()
    env = {**os.environ, **settings.environment()}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "bentoml"),
            "serve",
            summary["bento_tag"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError as error:
                if server.poll() is not None or time.monotonic() > deadline:
                    detail = server.stderr.read() if server.stderr else ""
                    raise AssertionError(f"bento did not start: {detail}") from error
                time.sleep(0.5)
        raw = pl.read_parquet(settings.data_dir / f"generated-{ROWS}-seed7.parquet").tail(200)
        records = raw.drop("is_fraud").with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.f"))
        # when the same rows are scored by the service and by the batch path
        served = _post(f"http://127.0.0.1:{port}/score", {"records": records.to_dicts()})
        model = ScoringModel.load(Path(summary["reports_dir"]) / "scoring_model.json")
        batch = model.score(raw.drop("is_fraud"))
        # then the scores agree to the last bits and the decisions follow the threshold
        np.testing.assert_allclose([r["score"] for r in served], batch, rtol=0, atol=1e-12)
        assert [r["decision"] == "decline" for r in served] == list(batch >= model.threshold)
        assert {r["model_version"] for r in served} == {summary["model_version"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_failed_packaging_leaves_no_registered_version(
    trained: tuple[dict[str, Any], Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a bentofile whose service does not exist, so the real `bentoml build` fails
    summary, settings = trained
    import tasks.package

    broken = tmp_path / "bentofile.yaml"
    text = tasks.package.BENTOFILE.read_text(encoding="utf-8")
    broken.write_text(text.replace('"bentos.service:Scorer"', '"bentos.service:NoSuchService"'), encoding="utf-8")
    monkeypatch.setattr(tasks.package, "BENTOFILE", broken)
    from flows.training import training_flow
    from tasks.package import BentoBuildError
    from tasks.registry import mlflow_client

    config = small_default_config(model_name="packaging-fails")
    # when the flow runs
    with pytest.raises(BentoBuildError, match="bentoml build failed"):
        training_flow(config=config.model_dump(mode="json"), rows=ROWS)
    # then no version of that model is left in the registry, and the run is marked failed with the reason
    client = mlflow_client(settings)
    assert client.search_model_versions("name='packaging-fails'") == []
    runs = client.search_runs(
        [client.get_experiment_by_name(settings.experiment_name).experiment_id],
        "tags.`scoregate.failure` LIKE 'packaging failed%'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    # and the earlier model is untouched
    assert client.get_model_version(summary["model_name"], summary["model_version"]).status == "READY"


def test_training_saves_the_versions_drift_reference(trained: tuple[dict[str, Any], Settings]) -> None:
    # given a finished training flow
    summary, settings = trained
    from tasks.drift_reference import PROFILE_FILE, reference_folder

    # when its version's drift reference folder is read
    profile = reference_folder(settings.home, summary["model_name"], str(summary["model_version"])) / PROFILE_FILE
    # then the profile was written at training time, for that version, and no warning says otherwise
    assert profile.is_file()
    assert str(summary["model_version"]) in profile.read_text(encoding="utf-8")
    assert not [w for w in summary["warnings"] if "drift reference" in w]


def test_a_second_training_in_the_same_home_waits_for_the_first(
    trained: tuple[dict[str, Any], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a training that holds the home's training lock, and a short wait allowed for it
    _, settings = trained
    from flows.training import training_flow
    from tasks.locks import LockTimeout, exclusive_lock
    from tasks.registry import mlflow_client

    monkeypatch.setenv("SCOREGATE_HOME", str(settings.home))
    monkeypatch.setenv("SCOREGATE_TRAINING_LOCK_TIMEOUT_SECONDS", "0.2")
    config = small_default_config(model_name="waits-for-the-lock")
    held = exclusive_lock(settings.home / "locks" / "training.lock", timeout_seconds=1, purpose="training")
    # when another training starts
    with held, pytest.raises(LockTimeout, match="training"):
        training_flow(config=config.model_dump(mode="json"), rows=ROWS)
    # then it gave up before doing anything: no version of its model exists
    assert mlflow_client(settings).search_model_versions("name='waits-for-the-lock'") == []
