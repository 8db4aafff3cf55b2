"""The drift watch's parts without Prefect or MLflow: PSI, the prediction-log reader, Evidently, state, the policy."""

from __future__ import annotations

import gzip
import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from tasks.audit import append_audit_record, read_audit_records
from tasks.drift import (
    SCORE_COLUMN,
    DriftError,
    DriftSettings,
    DriftWindow,
    FeatureKind,
    LogStats,
    PsiBins,
    ReferenceInfo,
    build_drift_report,
    fit_psi_bins,
    psi,
    psi_counts,
)
from tasks.drift_log import DECISION_COLUMN, prediction_log_folder, read_prediction_window
from tasks.drift_policy import decide_drift, drift_policy_input
from tasks.drift_state import (
    MAX_WINDOWS,
    DriftState,
    WindowRecord,
    load_state,
    past_actions,
    record_window,
    save_state,
    window_history,
)
from tasks.policy import OPA_URL_ENV
from tasks.prediction_log import LOG_ENV, PredictionLog
from tests.conftest_opa import OpaRestStandIn
from tests.policy_helpers import POLICY_DIR, copy_policies

KINDS: dict[str, FeatureKind] = {
    "amount": "numeric",
    "channel": "categorical",
    "device_seen_before": "boolean",
    "count_1h": "numeric",
}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = DriftWindow(start=T0, end=T0 + timedelta(hours=1))


def transactions(rows: int, seed: int, *, amount_scale: float = 1.0) -> pl.DataFrame:
    """Feature rows like the base frame's: log-normal amounts, three channels, a flag and a point mass at 0."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 0.8, rows) * amount_scale
    score = 1 / (1 + np.exp(-(-5 + 0.4 * np.log(amount))))
    return pl.DataFrame(
        {
            "amount": amount,
            "channel": rng.choice(["pos", "online", "atm"], rows, p=[0.6, 0.3, 0.1]),
            "device_seen_before": rng.random(rows) < 0.8,
            "count_1h": np.where(rng.random(rows) < 0.7, 0.0, rng.integers(1, 5, rows)).astype(np.float64),
            SCORE_COLUMN: score,
        }
    )


def log_line(row: dict[str, Any], *, at: datetime, version: str = "3", decision: str = "approve") -> dict[str, Any]:
    """One prediction-log line in the documented format (tasks/prediction_log.py)."""
    return {
        "time": at.isoformat(),
        "request_id": "abc-1",
        "record": 0,
        "id": "tx-1",
        "event_time": "2026-02-28T23:59:01",
        "model_name": "scoregate-fraud",
        "model_version": version,
        "score": row[SCORE_COLUMN],
        "decision": decision,
        "threshold": 0.3,
        "threshold_version": "3.max_f1",
        "features": {name: row[name] for name in KINDS},
    }


def write_log(folder: Path, frame: pl.DataFrame, *, start: datetime, **options: Any) -> Path:
    """Lines written by the scorer's own PredictionLog, one second apart from `start`."""
    log = PredictionLog(folder)
    for index, row in enumerate(frame.iter_rows(named=True)):
        log.write(log_line(row, at=start + timedelta(seconds=index), **options))
    log.close()
    assert log.path is not None
    return log.path


def read(folder: Path) -> tuple[pl.DataFrame, LogStats]:
    return read_prediction_window(folder, model_name="scoregate-fraud", model_version="3", window=WINDOW, kinds=KINDS)


# --- PSI ---------------------------------------------------------------------------------------------------


def test_psi_of_a_sample_against_itself_is_zero_and_a_shift_is_large() -> None:
    # given a reference and its bins
    reference = transactions(20_000, seed=1)
    bins = fit_psi_bins(reference["amount"], "numeric")
    # when the same distribution (another draw) and amounts x100 are compared
    same = psi(psi_counts(reference["amount"], bins), psi_counts(transactions(20_000, seed=2)["amount"], bins), 1e-4)
    cents = psi(
        psi_counts(reference["amount"], bins),
        psi_counts(transactions(20_000, seed=2, amount_scale=100)["amount"], bins),
        1e-4,
    )
    # then the draw is stable (< 0.01) and the unit change is far beyond the usual 0.25 line
    assert 0 <= same < 0.01
    assert cents > 5


def test_psi_matches_the_formula_on_known_counts() -> None:
    # given two count vectors
    reference, current = np.array([50, 30, 20, 0]), np.array([25, 25, 50, 0])
    # when PSI is computed
    value = psi(reference, current, 1e-4)
    # then it is sum((c - r) ln(c / r)) over the non-empty bins (the empty bin adds nothing)
    expected = sum((c - r) * math.log(c / r) for r, c in [(0.5, 0.25), (0.3, 0.25), (0.2, 0.5)])
    assert value == pytest.approx(expected, rel=1e-12)


def test_numeric_bins_keep_a_point_mass_in_its_own_bin() -> None:
    # given a feature that is 0 for 70% of rows
    reference = transactions(10_000, seed=3)["count_1h"]
    # when bins are fitted
    bins = fit_psi_bins(reference, "numeric")
    counts = psi_counts(reference, bins)
    # then the edges are unique, 0 closes the first bin, and that bin holds the point mass
    assert bins.edges is not None and bins.edges == sorted(set(bins.edges)) and bins.edges[0] == 0.0
    assert counts[0] == int((reference == 0).sum())
    assert counts.sum() == reference.len() and counts[-1] == 0  # nothing missing


def test_missing_values_and_unseen_levels_have_their_own_bins() -> None:
    # given categorical bins fitted on three channels
    bins = fit_psi_bins(pl.Series(["pos", "online", "atm", "pos"]), "categorical")
    # when a current column holds a new level and nulls
    counts = psi_counts(pl.Series(["pos", "kiosk", None, None]), bins)
    # then levels are sorted, the new level counts as 'other' and the nulls as missing
    assert bins.levels == ["atm", "online", "pos"]
    assert counts.tolist() == [0, 0, 1, 1, 2]
    assert PsiBins(kind="numeric", edges=[1.0, 2.0]).size == 4


def test_booleans_are_binned_like_the_log_spells_them() -> None:
    # given boolean bins
    bins = fit_psi_bins(pl.Series([True, False, True]), "boolean")
    # when counted
    counts = psi_counts(pl.Series([True, True, None]), bins)
    # then 'false'/'true' are the levels and a null is missing
    assert bins.levels == ["false", "true"]
    assert counts.tolist() == [0, 2, 0, 1]


# --- reading the prediction log ----------------------------------------------------------------------------


def test_the_window_holds_only_the_champions_lines_inside_it(tmp_path: Path) -> None:
    # given lines of the champion inside and outside the window, and lines of another version
    frame = transactions(30, seed=4)
    write_log(tmp_path, frame.head(10), start=T0 - timedelta(seconds=5))  # 5 before, 5 inside
    write_log(tmp_path, frame.slice(10, 10), start=T0 + timedelta(minutes=1), version="2")
    write_log(tmp_path, frame.slice(20, 10), start=T0 + timedelta(minutes=2), decision="decline")
    # when the window is read
    rows, stats = read(tmp_path)
    # then 15 rows are the champion's in the window, with their features, score and decision
    assert rows.height == 15 and stats.rows == 15
    assert (stats.lines, stats.other_model, stats.outside_window, stats.malformed) == (30, 10, 5, 0)
    assert rows.columns == [*KINDS, SCORE_COLUMN, DECISION_COLUMN]
    assert rows.schema["device_seen_before"] == pl.Boolean and rows.schema["amount"] == pl.Float64
    assert rows[DECISION_COLUMN].to_list().count("decline") == 10
    assert rows["amount"].to_list()[:5] == pytest.approx(frame["amount"].to_list()[5:10])


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    # given a good log with bad lines among the good ones
    good = [
        log_line(row, at=T0 + timedelta(seconds=i)) for i, row in enumerate(transactions(20, 5).iter_rows(named=True))
    ]
    bad: list[str] = [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({**good[0], "score": "high"}),
        json.dumps({**good[0], "score": 1.5}),
        json.dumps({**good[0], "time": "yesterday"}),
        json.dumps({**good[0], "decision": "maybe"}),
        json.dumps({key: value for key, value in good[0].items() if key != "score"}),
        json.dumps({**good[0], "features": {**good[0]["features"], "device_seen_before": "yes"}}),
        json.dumps({**good[0], "features": [1, 2]}),
    ]
    lines = [json.dumps(line) for line in good[:10]] + bad + [json.dumps(line) for line in good[10:]]
    # and a half-written last line, as a reader may find in a file being written
    (tmp_path / "predictions-host-1.jsonl").write_text(
        "\n".join(lines) + '\n{"time": "2026-03-01T12:', encoding="utf-8"
    )
    # when the window is read
    rows, stats = read(tmp_path)
    # then every good line is kept, every bad one counted, and nothing raised
    assert rows.height == 20
    assert stats.malformed == len(bad) + 1
    assert stats.lines == 20 + len(bad) + 1


def test_rotated_and_compressed_files_are_read_and_old_files_skipped(tmp_path: Path) -> None:
    # given a current file, a rotated backup, a gzipped backup, and a file last written before the window
    frame = transactions(40, seed=6)
    current = write_log(tmp_path, frame.head(10), start=T0)
    current.rename(tmp_path / f"{current.name}.1")
    write_log(tmp_path, frame.slice(10, 10), start=T0 + timedelta(minutes=1))
    compressed = "\n".join(
        json.dumps(log_line(r, at=T0 + timedelta(minutes=2))) for r in frame.slice(20, 10).iter_rows(named=True)
    )
    (tmp_path / "predictions-other-9.jsonl.2.gz").write_bytes(gzip.compress(compressed.encode()))
    old = tmp_path / "predictions-old-1.jsonl"
    old.write_text(
        json.dumps(log_line(frame.row(30, named=True), at=T0 + timedelta(minutes=3))) + "\n", encoding="utf-8"
    )
    os.utime(old, (T0.timestamp() - 3600, T0.timestamp() - 3600))
    (tmp_path / "notes.txt").write_text("not a log", encoding="utf-8")
    # when the window is read
    rows, stats = read(tmp_path)
    # then 30 rows come from the three live files and the stale file is skipped unread
    assert rows.height == 30
    assert (stats.files, stats.files_skipped_old) == (4, 1)


def test_an_empty_log_folder_gives_an_empty_window(tmp_path: Path) -> None:
    # given a folder with an empty log file
    (tmp_path / "predictions-host-1.jsonl").write_text("", encoding="utf-8")
    # when read
    rows, stats = read(tmp_path)
    # then there are no rows, with the typed columns, and the counts say why
    assert rows.height == 0 and rows.columns == [*KINDS, SCORE_COLUMN, DECISION_COLUMN]
    assert stats.lines == 0 and stats.files == 1


def test_the_log_folder_follows_the_scorers_setting(tmp_path: Path) -> None:
    # given the scorer's log settings
    # when the folder is resolved
    # then the default, an explicit folder, and a clear error for stdout or off
    assert prediction_log_folder({}, tmp_path) == tmp_path / "predictions"
    assert prediction_log_folder({LOG_ENV: str(tmp_path / "x")}, tmp_path) == tmp_path / "x"
    for value in ("-", "off"):
        with pytest.raises(DriftError, match="writes no prediction log files"):
            prediction_log_folder({LOG_ENV: value}, tmp_path)


# --- the report, with the real Evidently -------------------------------------------------------------------


def report_for(tmp_path: Path, current: pl.DataFrame, settings: DriftSettings | None = None) -> Any:
    reference = transactions(5_000, seed=7)
    settings = settings or DriftSettings()
    bins = {name: fit_psi_bins(reference[name], kind) for name, kind in KINDS.items()}
    bins[SCORE_COLUMN] = fit_psi_bins(reference[SCORE_COLUMN], "numeric")
    return build_drift_report(
        reference=reference,
        current=current,
        kinds=KINDS,
        bins=bins,
        threshold=0.02,
        decline_rate_current=0.5,
        model_name="scoregate-fraud",
        model_version="3",
        environment="production",
        window=WINDOW,
        reference_info=ReferenceInfo(
            run_id="r", snapshot_hash="s", train_rows=5_000, rows=5_000, seed=1, built_at=T0, path=str(tmp_path)
        ),
        log=LogStats(folder=str(tmp_path), rows=current.height),
        settings=settings,
        html_path=tmp_path / "report.html",
    )


def test_amounts_in_cents_are_caught_and_named_first(tmp_path: Path) -> None:
    # given a current window whose amounts arrive x100 (scores computed from them move too)
    current = transactions(3_000, seed=8, amount_scale=100)
    # when the report is built (Evidently sees a sample of at most 1,000 rows)
    report = report_for(tmp_path, current, DriftSettings(evidently_max_rows=1_000))
    # then amount leads the drifted features, Evidently agrees, and steady features stay steady
    assert report.most_drifted[0] == "amount"
    by_name = {f.name: f for f in report.features}
    assert by_name["amount"].psi > 5 and by_name["amount"].drifted
    assert by_name["amount"].current_median > 50 * by_name["amount"].reference_median
    assert by_name["channel"].psi < 0.05 and not by_name["channel"].drifted
    assert report.score.psi > 0.25 and report.score.drifted
    assert report.drifted_share == pytest.approx(0.25)
    assert (report.rows, report.evidently_rows) == (3_000, 1_000)
    assert report.evidently_error is None and by_name["amount"].evidently_method == "wasserstein"
    assert report.score.decline_rate_current == 0.5 and 0 < report.score.decline_rate_reference < 1
    # and the HTML report is Evidently's
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "root_metric_" in page and "amount" in page and "Evidently failed" not in page


def test_an_evidently_failure_is_reported_and_psi_still_decides(tmp_path: Path) -> None:
    # given a drift method Evidently does not know
    settings = DriftSettings(numeric_method="no-such-test")
    # when the report is built
    report = report_for(tmp_path, transactions(2_000, seed=9, amount_scale=100), settings)
    # then the error is carried, PSI is there, and a plain HTML page stands in for Evidently's
    assert report.evidently_error
    assert report.most_drifted[0] == "amount" and not any(f.drifted for f in report.features)
    assert "Evidently failed" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_an_empty_window_cannot_be_reported(tmp_path: Path) -> None:
    with pytest.raises(DriftError, match="no rows"):
        report_for(tmp_path, transactions(1, seed=1).clear())


# --- state and history -------------------------------------------------------------------------------------


def window_record(end_minute: int, version: str = "3", environment: str = "production") -> WindowRecord:
    end = T0 + timedelta(minutes=end_minute)
    return WindowRecord(
        model_name="scoregate-fraud",
        model_version=version,
        environment=environment,
        start=end - timedelta(hours=1),
        end=end,
        evaluated_at=end,
        rows=1000,
        feature_psi={"amount": 0.01 * end_minute},
        score_psi=0.01,
        decline_rate_reference=0.02,
        decline_rate_current=0.02,
    )


def test_the_window_history_is_ordered_deduplicated_and_capped(tmp_path: Path) -> None:
    # given a state with hourly windows recorded out of order, one twice, and another environment's
    state = DriftState()
    for minute in (180, 60, 120, 120):
        state = record_window(state, window_record(minute))
    state = record_window(state, window_record(150, environment="staging"))
    path = tmp_path / "drift" / "state.json"
    save_state(path, state)
    # when it is read back and the history before the window ending at minute 180 is taken
    loaded, problem = load_state(path)
    history = window_history(loaded, window_record(180))
    # then the windows are oldest first, once each, of this environment only
    assert problem is None
    assert [w.end for w in history] == [T0 + timedelta(minutes=60), T0 + timedelta(minutes=120)]
    # and the file never grows past the cap
    for minute in range(MAX_WINDOWS + 5):
        state = record_window(state, window_record(minute + 100))
    assert len(state.windows) == MAX_WINDOWS


def test_the_same_traffic_watched_again_counts_once() -> None:
    # given hourly scheduled windows whose ends jitter by seconds (they overlap a little), and a watch run by hand
    # 40 minutes after the one ending at minute 120, over the hour before it
    jitter = [window_record(60), window_record(120)]
    jitter[0] = jitter[0].model_copy(update={"end": jitter[0].end + timedelta(seconds=3)})
    by_hand = window_record(160)
    state = DriftState()
    for window in (*jitter, by_hand):
        state = record_window(state, window)
    # when the history of the scheduled window ending at minute 180 is taken
    history = window_history(state, window_record(180))
    # then the window by hand, which shares 40 of its 60 minutes with the current one, is not counted, while the
    # scheduled windows, overlapping by seconds, are
    assert [w.end for w in history] == [jitter[0].end, jitter[1].end]


def test_a_window_ending_in_a_daylight_saving_zone_is_as_long_as_asked() -> None:
    # given the end of a one-hour window just after the clocks went forward in Berlin
    end = datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    # when the window is built
    window = DriftWindow.ending(end, 1.0)
    # then it covers one real hour, in UTC
    assert window.end - window.start == timedelta(hours=1)
    assert window.end == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_an_unreadable_state_file_is_moved_aside_and_the_history_restarts(tmp_path: Path) -> None:
    # given a state file that is not JSON
    path = tmp_path / "state.json"
    path.write_text("{oops", encoding="utf-8")
    # when it is loaded
    state, problem = load_state(path)
    # then the history is empty, the warning says so, and the file is kept aside for a person
    assert state.windows == [] and problem is not None and "history restarts" in problem
    assert not path.exists() and len(list(tmp_path.glob("state.json.unreadable-*"))) == 1


def test_past_actions_come_from_drift_decisions_in_the_audit_log(tmp_path: Path) -> None:
    # given decisions for two environments, a "none", a dry run's and another audit action
    log = tmp_path / "audit.jsonl"
    decisions = [("production", "retrain", "act"), ("staging", "rollback", "act"), ("production", "none", "act")]
    decisions.append(("production", "rollback", "dry-run"))
    for environment, action, mode in decisions:
        append_audit_record(
            log,
            actor="w",
            action="drift.decision",
            environment=environment,
            model_name="scoregate-fraud",
            model_version="3",
            details={"action": action, "mode": mode},
        )
    append_audit_record(
        log, actor="w", action="rollback", environment="production", model_name="scoregate-fraud", model_version="2"
    )
    # when production's past actions are read
    actions = past_actions(read_audit_records(log), "scoregate-fraud", "production")
    # then only the production retrain counts, with an RFC 3339 time
    assert [(a["action"], a["model_version"]) for a in actions] == [("retrain", "3")]
    assert actions[0]["at"].endswith("Z")


# --- the policy adapter ------------------------------------------------------------------------------------


def policy_document(score_psi: float, *, history: int = 1, rollback_available: bool = True) -> dict[str, Any]:
    current = window_record(60).model_copy(update={"score_psi": score_psi, "feature_psi": {"amount": 7.5}})
    report = report_like(current)
    return drift_policy_input(
        report,
        [current.model_copy(update={"end": T0})] * history,
        [],
        rollback_available=rollback_available,
        evaluated_at=T0 + timedelta(hours=1),
    )


def report_like(window: WindowRecord) -> Any:
    """A DriftReport carrying the window's figures (what the flow hands to drift_policy_input)."""
    from tasks.drift import DriftReport, FeatureDrift, ScoreDrift

    return DriftReport(
        model_name=window.model_name,
        model_version=window.model_version,
        environment=window.environment,
        window=DriftWindow(start=window.start, end=window.end),
        generated_at=window.evaluated_at,
        rows=window.rows,
        evidently_rows=window.rows,
        reference=ReferenceInfo(run_id="r", snapshot_hash="s", train_rows=1, rows=1, seed=1, built_at=T0, path="p"),
        log=LogStats(folder="f"),
        features=[
            FeatureDrift(
                name=name,
                kind="numeric",
                psi=value,
                bins=10,
                evidently_method="",
                evidently_score=None,
                drifted=False,
                reference_missing_share=0.0,
                current_missing_share=0.0,
            )
            for name, value in window.feature_psi.items()
        ],
        score=ScoreDrift(
            psi=window.score_psi,
            evidently_method="",
            evidently_score=None,
            drifted=False,
            reference_mean=0.1,
            current_mean=0.1,
            threshold=0.3,
            decline_rate_reference=window.decline_rate_reference,
            decline_rate_current=window.decline_rate_current,
        ),
        drifted_share=0.0,
        most_drifted=list(window.feature_psi),
    )


def test_the_shipped_policy_rolls_back_a_repeated_hard_shift_and_retrains_on_feature_drift() -> None:
    # given two windows with a hard score shift, and two with drifted features but a steady score
    # when the shipped policies decide
    hard = decide_drift(POLICY_DIR, policy_document(2.0))
    features = decide_drift(POLICY_DIR, policy_document(0.05))
    # then the first rolls back and the second retrains, each explained and tied to the policy and input
    assert hard.action == "rollback" and "action.rollback" in hard.rules() and hard.error is None
    assert features.action == "retrain" and "action.retrain" in features.rules()
    assert len(hard.policy_digest) == 64 and hard.input_hash != features.input_hash


def test_a_policy_that_does_not_compile_never_acts(tmp_path: Path) -> None:
    # given a copy of the policies whose drift module is broken
    folder = copy_policies(tmp_path / "policies")
    (folder / "drift.rego").write_text("package scoregate.drift\n\ndecision := {\n", encoding="utf-8")
    # when a hard shift is decided
    decision = decide_drift(folder, policy_document(2.0))
    # then nothing is done and the error says why
    assert decision.action == "none" and decision.error
    assert decision.rules() == ["policy.compile_error"] or "compile" in decision.error


def test_a_malformed_or_undefined_answer_never_acts(tmp_path: Path) -> None:
    # given a policy that answers an unknown action, and a policy folder without the drift module
    odd = copy_policies(tmp_path / "odd")
    (odd / "drift.rego").write_text(
        'package scoregate.drift\n\ndecision := {"action": "reboot", "reasons": []}\n', encoding="utf-8"
    )
    missing = copy_policies(tmp_path / "missing")
    (missing / "drift.rego").unlink()
    (missing / "drift_test.rego").unlink()
    # when a hard shift is decided by each
    # then neither acts, and both carry an error
    for folder in (odd, missing):
        decision = decide_drift(folder, policy_document(2.0))
        assert decision.action == "none" and decision.error, folder


def test_missing_policy_data_is_a_reasoned_none(tmp_path: Path) -> None:
    # given the policies without drift.json
    folder = copy_policies(tmp_path / "policies")
    (folder / "data" / "drift.json").unlink()
    # when a hard shift is decided
    decision = decide_drift(folder, policy_document(2.0))
    # then the policy itself answers none, naming the configuration
    assert decision.action == "none" and decision.error is None
    assert decision.rules() == ["config.invalid"]


def test_an_opa_server_gives_the_same_decision_and_an_unreachable_one_none() -> None:
    # given the shipped policies behind OPA's REST API (a test stand-in over the same engine)
    document = policy_document(2.0)
    with OpaRestStandIn(POLICY_DIR) as server:
        # when the drift decision is asked over HTTP
        remote = decide_drift(POLICY_DIR, document, environ={OPA_URL_ENV: server.url})
    local = decide_drift(POLICY_DIR, document)
    # then it matches the in-process answer
    assert (remote.action, remote.rules()) == (local.action, local.rules()) == ("rollback", local.rules())
    # and a server that cannot be reached means no action
    unreachable = decide_drift(POLICY_DIR, document, environ={OPA_URL_ENV: "http://127.0.0.1:9"}, timeout=1)
    assert unreachable.action == "none" and unreachable.error and "gave no drift decision" in unreachable.error


def test_the_snapshot_names_match_the_training_runs() -> None:
    # given the names the reference builder reads and the names training writes
    from tasks import drift_reference, reporting

    # then they agree
    assert (drift_reference.SNAPSHOT_FILE, drift_reference.LABEL_COLUMN, drift_reference.SPLIT_COLUMN) == (
        reporting.SNAPSHOT_FILE,
        reporting.LABEL_COLUMN,
        reporting.SPLIT_COLUMN,
    )
