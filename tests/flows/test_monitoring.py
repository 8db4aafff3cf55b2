"""The drift watch end to end: the incident replay, then faults, on a real MLflow registry, OPA engine and git remote.

One module-scoped replay (`run_incident_demo` on a small model) trains the versions, scores traffic through the
scorer's engine into the prediction log and runs four watches; the later tests re-watch its windows (dry runs
where the decision does not matter) and break one thing at a time. They run in file order: the last one rolls
production back.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows.monitoring import NoChampion, NoPredictions, monitor_command, watch_drift
from tasks.audit import read_audit_records, verify_audit_log
from tasks.drift import SCORE_COLUMN, DriftError
from tasks.locks import LockTimeout, exclusive_lock
from tasks.prediction_log import LOG_ENV
from tasks.settings import Settings
from tests.flows.conftest import home_at
from tests.policy_helpers import copy_policies

MODEL = "scoregate-fraud"
Replay = tuple[dict[str, Any], Settings, float]


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    """The incident replayed once on 6,000 training rows and four windows of about 1,000 scored rows."""
    with home_at(tmp_path_factory.mktemp("incident-home")) as settings:
        from flows.incident import run_incident_demo

        started = time.perf_counter()
        result = run_incident_demo(6_000, window_rows=1_000)
        yield result, settings, time.perf_counter() - started


def window_of(result: dict[str, Any], index: int) -> dict[str, Any]:
    """watch_drift's window arguments for one of the replay's windows."""
    start = datetime.fromisoformat(result["windows"][index]["start"])
    end = datetime.fromisoformat(result["windows"][index]["end"])
    return {"window_end": end, "window_hours": (end - start).total_seconds() / 3600}


def audit_actions(settings: Settings) -> list[str]:
    return [record.action for record in read_audit_records(settings.home / "audit" / "audit.jsonl")]


def aliases(settings: Settings) -> dict[str, str]:
    from tasks.registry import mlflow_client

    found = mlflow_client(settings).get_registered_model(MODEL).aliases
    return {alias: str(version) for alias, version in found.items()}


def test_the_replayed_incident_is_caught_named_and_acted_on(replay: Replay) -> None:
    # given the incident replayed: normal traffic, then amounts in cents in three windows
    result, settings, seconds = replay
    normal, first, second, last = result["windows"]
    print(f"incident replay: {seconds:.1f} s")
    # then normal traffic needs nothing: no feature drifted, the score is steady
    assert (normal["action"], normal["rules"], normal["most_drifted"]) == ("none", ["drift.none"], [])
    assert normal["rows"] == normal["scored"] > 900
    # and the first cents window names amount and the features built from it, and waits for the hysteresis
    assert first["most_drifted"][0] == "amount"
    assert {"amount_sum_24h", "amount_to_mean"} <= set(first["most_drifted"])
    assert first["feature_psi"]["amount"] > 5 and first["feature_psi"]["channel"] < 0.1
    assert first["action"] == "none" and "hysteresis.pending" in first["rules"]
    # and the second one acts: the policy asks for a retrain, which ran and went to the staging gate
    assert second["action"] == "retrain" and "hysteresis.met" in second["rules"]
    assert second["result"]["status"] == "done" and second["result"]["new_version"] == "3"
    assert second["result"]["promotion_allowed"] is not None
    # and after it the drift is still named but the watch does not act again
    assert last["most_drifted"][0] == "amount" and last["action"] == "none"
    # and production still runs v2 (a retrain only goes to staging), with v1 to roll back to
    assert result["versions"] == {"earlier": "1", "champion": "2"} and result["production_alias_after"] == "2"
    # and every step is in the audit trail, which verifies
    actions = audit_actions(settings)
    assert result["audit_verified"] and verify_audit_log(settings.home / "audit" / "audit.jsonl").ok
    assert actions.count("bootstrap") == 2 and actions.count("drift.decision") == 4
    assert actions.count("drift.action") == 1 and "promotion.decision" in actions


def test_the_incident_summary_reads_window_by_window(
    replay: Replay, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the replay's outcome, printed on a terminal wide enough for the table's rows not to wrap
    result, _, _ = replay
    monkeypatch.setenv("COLUMNS", "220")
    from flows.cli import _print_incident

    # when `scoregate demo --incident` prints it without --json
    _print_incident(result)
    lines = capsys.readouterr().out.splitlines()
    # then each window has a row: what drifted most, the decision and what was carried out
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    rows = {row[0]: row for row in cells}
    assert list(rows) == [window["window"] for window in result["windows"]]
    assert rows["normal traffic"][3:] == ["-", "none", "none"]
    assert rows["amounts in cents"][3].startswith("amount ") and rows["amounts in cents"][4] == "none"
    assert rows["amounts in cents, again"][4:] == ["retrain", "done (v3 trained)"]
    assert any("production alias now on v2" in line and "verifies" in line for line in lines)


def test_each_watch_leaves_a_report_an_mlflow_run_and_a_window(replay: Replay) -> None:
    # given the replay's four watches
    result, settings, _ = replay
    from tasks.registry import mlflow_client

    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    # when the MLflow experiment, the reports folder and the state file are read
    runs = client.search_runs([experiment.experiment_id], "tags.`scoregate.kind` = 'drift-watch'")
    state = json.loads((settings.home / "drift" / "state.json").read_text(encoding="utf-8"))
    # then there is one monitoring run per watch with the HTML and JSON reports and the PSI figures
    assert len(runs) == 4
    for run in runs:
        names = sorted(Path(a.path).suffix for a in client.list_artifacts(run.info.run_id, "drift"))
        assert names == [".html", ".json"] and "psi_amount" in run.data.metrics
        assert run.data.tags["scoregate.champion_run_id"] != run.info.run_id
    # and every window's Evidently report is on disk, and the state file holds the four windows
    assert all(Path(window["report"]).stat().st_size > 10_000 for window in result["windows"])
    assert len(state["windows"]) == 4
    # and the scorer's engine wrote the log lines in the documented format
    line = json.loads((next((settings.home / "predictions").glob("*.jsonl"))).read_text().splitlines()[0])
    assert {"time", "request_id", "model_version", "score", "decision", "features"} <= set(line)


def test_the_watch_runs_as_a_prefect_flow(replay: Replay) -> None:
    # given the last cents window of v2
    result, _, _ = replay
    window = window_of(result, 3)
    from flows.monitoring import monitoring_flow

    # when the Prefect flow watches it as a dry run
    outcome = monitoring_flow(
        window_end=window["window_end"].isoformat(), window_hours=window["window_hours"], act=False
    )
    # then it measures the same window and names the same feature
    assert outcome["rows"] == result["windows"][3]["rows"] and outcome["most_drifted"][0] == "amount"
    assert outcome["result"]["status"] in ("none", "not-run")


def test_malformed_log_lines_are_skipped_and_counted(replay: Replay) -> None:
    # given 600 good lines of the champion (rows of its own reference, each with the decision the scorer gives its
    # score) and 7 bad ones, in a window of their own
    _, settings, _ = replay
    cache = settings.home / "drift" / "reference" / MODEL / "v2"
    reference = pl.read_parquet(cache / "reference.parquet")
    threshold = json.loads((cache / "profile.json").read_text(encoding="utf-8"))["threshold"]
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    good = [
        {
            "time": (start + timedelta(seconds=i)).isoformat(),
            "model_name": MODEL,
            "model_version": "2",
            "score": row[SCORE_COLUMN],
            "decision": "decline" if row.pop(SCORE_COLUMN) >= threshold else "approve",
            "features": row,
        }
        for i, row in enumerate(reference.head(600).iter_rows(named=True))
    ]
    assert any(line["decision"] == "decline" for line in good)
    bad = ["{", "null", '{"time": 1}', json.dumps({**good[0], "score": -1}), json.dumps({**good[0], "decision": 3})]
    bad += [json.dumps({**good[0], "time": "2026-01-05 10:00"}), json.dumps({**good[0], "features": "amount=3"})]
    lines = [json.dumps(line) for line in good[:300]] + bad + [json.dumps(line) for line in good[300:]]
    (settings.home / "predictions" / "predictions-replayed-1.jsonl").write_text("\n".join(lines) + "\n")
    # when that hour is watched (a dry run)
    outcome = watch_drift(settings, window_end=start + timedelta(hours=1), act=False)
    # then the good lines are measured, the bad ones counted, and the decision made all the same
    assert (outcome.rows, outcome.malformed_lines) == (600, 7)
    assert any("7 malformed" in warning for warning in outcome.warnings)
    assert outcome.action == "none" and [r.rule for r in outcome.reasons] == ["drift.none"]


def test_the_reference_saved_at_training_time_is_the_one_the_watch_reads(replay: Replay) -> None:
    # given v2's training run folder (its scoring model and evaluation snapshot) and no cached profile
    result, settings, _ = replay
    from tasks.drift_reference import ReferenceProfile, save_training_reference
    from tasks.registry import get_version

    summaries = [json.loads(path.read_text(encoding="utf-8")) for path in settings.reports_dir.glob("*/summary.json")]
    [summary] = [entry for entry in summaries if entry["model_name"] == MODEL and entry["model_version"] == "2"]
    info = get_version(settings, MODEL, "2")
    run = Path(summary["reports_dir"])
    cache = settings.home / "drift" / "reference" / MODEL / "v2"
    shutil.rmtree(cache)
    files: dict[str, Any] = {
        "model_name": MODEL,
        "model_version": "2",
        "run_id": summary["run_id"],
        "scoring_model": run / "scoring_model.json",
        "scoring_model_sha256": info.tags["scoregate.scoring_model_sha256"],
        "snapshot": run / "evaluation_snapshot.parquet",
    }
    # when the training-time hook saves the profile from those files
    profile = save_training_reference(settings, **files, snapshot_sha256=info.tags["scoregate.snapshot_hash"])
    # then the next watch reads it from the cache, unchanged, and measures what the replay measured
    outcome = watch_drift(settings, act=False, **window_of(result, 0))
    assert not outcome.reference_rebuilt and profile.run_id == info.run_id
    assert ReferenceProfile.model_validate_json((cache / "profile.json").read_bytes()) == profile
    assert outcome.score_psi == pytest.approx(result["windows"][0]["score_psi"], abs=1e-4)
    # and a snapshot that is not the one the run recorded is refused, naming the version, the cache left as it was
    with pytest.raises(DriftError, match=r"v2: the evaluation snapshot's sha256 \w+ does not match"):
        save_training_reference(settings, **files, snapshot_sha256="0" * 64)
    assert (cache / "profile.json").exists()


def test_a_missing_reference_profile_is_rebuilt_and_without_a_snapshot_the_error_is_clear(replay: Replay) -> None:
    # given the champion's cached reference profile removed
    result, settings, _ = replay
    cache = settings.home / "drift" / "reference" / MODEL / "v2"
    shutil.rmtree(cache)
    # when a window is watched
    rebuilt = watch_drift(settings, act=False, **window_of(result, 0))
    # then the profile is rebuilt from the MLflow run and gives the same figures as before
    assert rebuilt.reference_rebuilt and (cache / "profile.json").exists()
    assert rebuilt.score_psi == pytest.approx(result["windows"][0]["score_psi"], abs=1e-4)
    # given the cache removed again and the snapshot missing from the run's artifacts too
    shutil.rmtree(cache)
    snapshot = next(settings.artifacts_dir.rglob("evaluation_snapshot.parquet"))
    snapshots = [path for path in settings.artifacts_dir.rglob("evaluation_snapshot.parquet")]
    aside = [path.with_suffix(".aside") for path in snapshots]
    for path, moved in zip(snapshots, aside, strict=True):
        path.rename(moved)
    try:
        # when a window is watched, then the error names the version, the run and the missing artifact
        with pytest.raises(DriftError, match=r"v2: no cached reference profile, and MLflow run \w+ has no snapshot/"):
            watch_drift(settings, act=False, **window_of(result, 0))
    finally:
        for path, moved in zip(snapshots, aside, strict=True):
            moved.rename(path)
    assert snapshot.exists()


def test_a_second_watch_waits_for_the_lock_then_stops_clearly(replay: Replay) -> None:
    # given another watch holding the drift lock
    result, settings, _ = replay
    lock = settings.home / "locks" / "drift.lock"
    with exclusive_lock(lock, timeout_seconds=1, purpose="drift watch"):
        # when a watch starts with a short wait, then it stops naming the holder
        started = time.perf_counter()
        with pytest.raises(LockTimeout, match=r"another drift watch is in progress \(pid \d+ since"):
            watch_drift(settings, act=False, lock_timeout_seconds=0.5, **window_of(result, 0))
        assert time.perf_counter() - started >= 0.5
    # given the lock held for a second only
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive_lock(lock, timeout_seconds=1, purpose="drift watch"):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    threading.Timer(1.0, release.set).start()
    # when a watch starts with a longer wait, then it waits its turn and completes
    outcome = watch_drift(settings, act=False, lock_timeout_seconds=30, **window_of(result, 0))
    holder.join()
    assert outcome.rows == result["windows"][0]["rows"]


def test_a_policy_without_an_answer_does_nothing_and_exits_with_an_error(
    replay: Replay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a drift policy that does not compile, and a cents window that would otherwise be acted on
    result, settings, _ = replay
    broken = copy_policies(tmp_path / "policies")
    (broken / "drift.rego").write_text("package scoregate.drift\n\ndecision := {\n", encoding="utf-8")
    before = aliases(settings)
    window = window_of(result, 2)
    # when the CLI entry watches it
    code = monitor_command(
        window_end=window["window_end"].isoformat(), window_hours=window["window_hours"], policy_dir=broken
    )
    # then it exits 4 saying nothing was done, nothing moved, and the audit records the error
    err = capsys.readouterr().err
    assert code == 4 and "the drift policy gave no answer, nothing was done" in err
    assert aliases(settings) == before
    last = read_audit_records(settings.home / "audit" / "audit.jsonl")[-1]
    assert last.action == "drift.decision" and last.details["action"] == "none" and last.details["error"]


def test_missing_policy_data_leaves_nothing_done_and_exits_with_an_error(
    replay: Replay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the drift policy without its data (thresholds, hysteresis, budget), and a cents window
    result, settings, _ = replay
    policies = copy_policies(tmp_path / "policies")
    (policies / "data" / "drift.json").unlink()
    before = aliases(settings)
    window = window_of(result, 2)
    # when the CLI entry watches it
    code = monitor_command(
        window_end=window["window_end"].isoformat(), window_hours=window["window_hours"], policy_dir=policies
    )
    # then the policy's "none" is not taken for a healthy window: the watch exits 4 naming the missing data
    err = capsys.readouterr().err
    assert code == 4 and "nothing was done" in err and "data is missing" in err
    assert aliases(settings) == before


def test_a_dry_run_leaves_no_window_for_later_watches(replay: Replay) -> None:
    # given the drift state after the replay's watches
    result, settings, _ = replay
    state = settings.home / "drift" / "state.json"
    before = state.read_bytes()
    # when a cents window is watched again as a dry run
    outcome = watch_drift(settings, act=False, **window_of(result, 1))
    # then it decided and reported, but the history the acting watches count is as it was
    assert outcome.most_drifted[0] == "amount" and outcome.result.status in ("none", "not-run")
    assert state.read_bytes() == before


def test_nothing_to_watch_is_a_clear_message_and_no_decision(
    replay: Replay, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, settings, _ = replay
    decisions = audit_actions(settings).count("drift.decision")
    # given an hour with no predictions, a log folder that does not exist, and a model with no champion
    # when each is watched
    empty = monitor_command(window_end="2020-01-01T00:00:00+00:00")
    empty_err = capsys.readouterr().err
    # (a time without an offset is UTC, and a window that is no interval is a usage error)
    naive = monitor_command(window_end="2020-01-01T00:00:00")
    naive_err = capsys.readouterr().err
    backwards = monitor_command(window_hours=-1)
    backwards_err = capsys.readouterr().err
    with pytest.raises(NoPredictions, match="no prediction log folder"):
        watch_drift(settings, environ={LOG_ENV: str(tmp_path / "nowhere")})
    unknown = monitor_command(model_name="no-such-model")
    unknown_err = capsys.readouterr().err
    with pytest.raises(NoChampion):
        watch_drift(settings, model_name="no-such-model")
    # then each says why, exits 3 (no data) or 2 (no champion), and no decision is recorded
    assert empty == 3 and "no prediction-log lines of scoregate-fraud v2" in empty_err
    assert naive == 3 and "between 2019-12-31T23:00:00+00:00 and 2020-01-01T00:00:00+00:00" in naive_err
    assert backwards == 2 and "window_hours must be positive" in backwards_err
    assert "no decision was made" in empty_err
    assert unknown == 2 and "has no 'production' alias" in unknown_err
    assert audit_actions(settings).count("drift.decision") == decisions


def test_a_hard_shift_rolls_production_back(replay: Replay, tmp_path: Path) -> None:
    # given policy data for which the cents window's score shift is hard, with no hysteresis or cooldown
    result, settings, _ = replay
    folder = copy_policies(tmp_path / "policies")
    data_file = folder / "data" / "drift.json"
    data = json.loads(data_file.read_text(encoding="utf-8"))
    data.update({"hysteresis": {"windows": 1, "breaches_required": 1, "max_age_hours": 6}, "cooldown_hours": 0})
    data["score_shift"]["psi"] = 0.05
    data_file.write_text(json.dumps(data), encoding="utf-8")
    # when the last cents window of v2 is watched
    outcome = watch_drift(settings, policy_dir=folder, actor="oncall-test", **window_of(result, 3))
    # then production is rolled back to v1 through Git (a revert on a review branch) and the alias, all audited
    assert outcome.action == "rollback", outcome.reasons
    assert outcome.result.status == "done" and outcome.result.rolled_back_to == "1"
    assert "rolled back production from v2 to v1" in outcome.result.detail
    assert aliases(settings)["production"] == "1"
    records = read_audit_records(settings.home / "audit" / "audit.jsonl")
    assert [r.action for r in records[-3:]] == ["drift.decision", "rollback", "drift.action"]
    assert records[-2].details["reason"].startswith("drift watch: ")
    assert records[-1].details["status"] == "done" and records[-1].details["rolled_back_to"] == "1"
